"""One prompt a request, for endpoints that refuse a list: still one :class:`BatchReply`.

The dispatcher hands each endpoint chunks of prompts and gets one
:class:`~aurora_swarm._transport.BatchReply` back per chunk, whatever the endpoint is. For an
endpoint that takes one string prompt a request (see :mod:`aurora_swarm._capabilities`),
:func:`one_by_one` sends the chunk's prompts as separate requests, as many at once as the
endpoint's limiter allows, and puts the answers in prompt order: order, retries, health and
statistics work as for a batched request.

A prompt whose own request failed becomes a per-prompt error in the reply (a
:class:`~aurora_swarm.BadResponseError`, so the dispatcher settles that prompt alone); it keeps
the original error's message, cause and whether a retry may help. When every prompt of the
chunk failed with an error a retry may cure (the endpoint is down, say), the first error is
raised instead, so the whole chunk moves to another endpoint and this one rests.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from ._capabilities import NOT_SUPPORTED_STATUSES, Detected
from ._endpoint import Endpoint
from ._exceptions import BadResponseError, HTTPStatusError, RequestError, RequestTimeout
from ._response import Usage
from ._stats import Counters
from ._transport import BatchReply, Choice

__all__ = [
    "OnePromptError", "RefusedPrompt", "after_list_refusal", "one_by_one", "per_prompt_error",
]

P = TypeVar("P")
SendOne = Callable[[P], Awaitable[tuple[Choice, Usage | None]]]


class RefusedPrompt(HTTPStatusError, BadResponseError):
    """An HTTP error status on one prompt's own request (a prompt of a chunk sent one a request).

    An :class:`~aurora_swarm.HTTPStatusError` for users (``status_code``, ``cause`` such as
    ``"HTTP 400"``); a :class:`~aurora_swarm.BadResponseError` for the dispatcher, which then
    settles this prompt alone. Retryable exactly when the status is (429, 5xx, ...).
    """


class OnePromptError(BadResponseError):
    """Any other failure of one prompt's own request (timeout, connection); see the module."""

    def __init__(self, original: RequestError) -> None:
        super().__init__(str(original))  # names the endpoint already
        self.endpoint = original.endpoint
        self.retryable = original.retryable
        self._cause_name = original.cause
        self.__cause__ = original

    @property
    def cause(self) -> str:
        """The original error's cause, e.g. ``"RequestTimeout"``."""
        return self._cause_name


async def after_list_refusal(
    detected: Detected,
    refusal: HTTPStatusError,
    items: Sequence[P],
    send_one: SendOne[P],
    send_list: Callable[[list[P]], Awaitable[object]],
    counters: Counters,
) -> tuple[Choice, Usage | None]:
    """A list of ``items`` refused as not supported: the list, or its items? Returns the first
    item's answer when the server takes one item a request (and notes so in ``detected``);
    else raises ``refusal``.

    The first item is asked alone, as a string, then as a list of one (even when the refused
    list was one item: a refusal may pass): only a server that answers the string and refuses
    that list cannot take lists. A refusal of the string says the item is at fault; an
    answered list says the refusal was something else (a list too long, a passing fault), and
    lists are noted as taken. Completions and embeddings share this one probe; each request
    it sends counts in the endpoint's ``counters``.
    """
    counters.requests += 1
    try:
        first = await send_one(items[0])
    except HTTPStatusError:
        raise refusal from None
    counters.requests += 1
    counters.batch_requests += 1
    try:
        await send_list(list(items[:1]))
    except HTTPStatusError as again:
        if again.status_code not in NOT_SUPPORTED_STATUSES:
            raise refusal from None
    else:
        detected.list_prompts = True
        raise refusal
    detected.list_prompts = False
    return first


def per_prompt_error(exc: RequestError) -> BadResponseError:
    """``exc`` as an error the dispatcher settles for one prompt of a reply."""
    if isinstance(exc, BadResponseError):
        return exc
    if isinstance(exc, HTTPStatusError):
        refused = RefusedPrompt(exc.status_code, _after_prefix(exc), endpoint=exc.endpoint,
                                retry_after=exc.retry_after, body=exc.body)
        refused.__cause__ = exc
        return refused
    return OnePromptError(exc)


def _after_prefix(exc: HTTPStatusError) -> str:
    """The message of an HTTP error without the endpoint and ``HTTP <status>:`` prefixes."""
    text = str(exc)
    where = f"{exc.endpoint}: " if exc.endpoint is not None else ""
    prefix = f"{where}HTTP {exc.status_code}: "
    return text[len(prefix):] if text.startswith(prefix) else text


async def one_by_one(
    send_one: SendOne[P],
    payloads: Sequence[P],
    endpoint: Endpoint,
    *,
    limiter: anyio.CapacityLimiter,
    timeout: float | None,
    first: tuple[Choice, Usage | None] | None = None,
    on_send: Callable[[], None] | None = None,
) -> BatchReply:
    """Send each payload as its own request; return one reply in payload order.

    Parameters
    ----------
    send_one:
        Sends one payload and returns its choice and usage, or raises a
        :class:`~aurora_swarm.RequestError`.
    payloads:
        The chunk's prompts (or conversations), in order.
    endpoint:
        Where they go (named by the errors of prompts left unanswered at the time limit).
    limiter:
        The endpoint's bound on one-prompt requests in flight.
    timeout:
        Seconds for the whole chunk; prompts still unanswered then get a
        :class:`~aurora_swarm.RequestTimeout` each. ``None``: no limit beyond each request's.
    first:
        The answer of ``payloads[0]``, when it was sent already (it is not sent again).
    on_send:
        Called as each request starts (to count it).

    Raises
    ------
    RequestError
        The first error, when every prompt failed and a retry may succeed.
    """
    start = time.perf_counter()
    count = len(payloads)
    slots: list[Choice | RequestError | None] = [None] * count
    usage = [0, 0, 0]  # prompt tokens, completion tokens, answers that reported usage

    def keep(k: int, answer: tuple[Choice, Usage | None]) -> None:
        choice, used = answer
        slots[k] = choice
        if used is not None:
            usage[0] += used.prompt_tokens
            usage[1] += used.completion_tokens
            usage[2] += 1

    async def one(k: int) -> None:
        async with limiter:
            if on_send is not None:
                on_send()
            try:
                answer = await send_one(payloads[k])
            except RequestError as exc:
                slots[k] = exc
                return
        keep(k, answer)

    if first is not None:
        keep(0, first)
    with anyio.move_on_after(timeout if timeout is not None else float("inf")):
        async with anyio.create_task_group() as group:
            for k in range(1 if first is not None else 0, count):
                group.start_soon(one, k)
    choices: list[Choice | BadResponseError] = []
    failures: list[RequestError] = []
    for slot in slots:
        if isinstance(slot, Choice):
            choices.append(slot)
            continue
        if slot is None:
            slot = RequestTimeout(f"not answered within the chunk's {timeout:g} s limit "
                                  "(one prompt a request)", endpoint=endpoint)
        failures.append(slot)
        choices.append(per_prompt_error(slot))
    if failures and len(failures) == count and all(f.retryable for f in failures):
        raise failures[0]
    total = Usage(usage[0], usage[1]) if usage[2] else None
    return BatchReply(choices, total, time.perf_counter() - start)
