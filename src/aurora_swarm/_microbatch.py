"""Micro-batching: many concurrent one-prompt calls coalesced into few batched requests.

An agent loop or a notebook full of coroutines asks one question at a time. A
:class:`MicroBatcher` holds those questions for a moment and sends them together: a batch leaves
when it holds ``max_batch`` prompts, or when its oldest prompt has waited ``max_wait_ms``. Only
prompts with the same ``max_tokens`` share a batch. At most ``max_queue`` prompts wait; one more
is refused at once with :class:`~aurora_swarm.OverloadError`, so a producer faster than the fleet
finds out instead of growing memory without limit. Batches go out concurrently, up to
``max_in_flight`` at a time, each in a task of the batcher's own (a full batch is started by the
submitter that filled it, the others by a collector task); while every in-flight slot is taken,
waiting prompts keep gathering, so batches fill up when the fleet is the bottleneck. With
``max_batch=1`` there is nothing to coalesce, and a prompt that finds a free slot is sent from
its submitter's own task, which saves a task switch per prompt.

How a batch is sent
-------------------
Each batch is first sent as ONE :meth:`VLLMPool.post_batch <aurora_swarm.VLLMPool.post_batch>`
request to one agent: the one with the fewest of this batcher's batches in flight, round-robin
among equals, skipping agents the pool has resting or benched after failures (its
:class:`~aurora_swarm.RetryPolicy` and :class:`~aurora_swarm.HealthPolicy`, the same state every
call of the pool sees). ``post_batch`` keeps the batch whole, which is the
point of batching, but it has no retry. So every prompt that failed for a reason another request
might not have (a retryable error, a down endpoint, or an HTTP error on a batch of several
prompts, which may be one bad neighbour's fault) is sent again through
:meth:`VLLMPool.send_all_batched <aurora_swarm.VLLMPool.send_all_batched>`, the pool's one retry
layer, which moves work off failing endpoints and isolates a bad prompt. The reverse choice,
``send_all_batched`` for every batch, would cut a batch of 16 on four endpoints into four
requests of four and undo the batching. A failed first try counts as one more attempt in the
answer's :attr:`~aurora_swarm.Response.attempts`.

Every prompt travels with the submitter that asked it, and answers are matched by position in
the pool's in-order results, so an answer always reaches its own submitter; a prompt is answered
(or its failure explained) exactly once. With a ``strict`` pool, a failed prompt raises its error
in its submitter, as :meth:`VLLMPool.post <aurora_swarm.VLLMPool.post>` would; the other answers
of its batch are kept.

Closing
-------
Leaving ``async with`` (or :meth:`MicroBatcher.aclose`) stops taking new prompts, sends every
waiting prompt at once without waiting out ``max_wait_ms``, and returns once each has its answer:
nobody who submitted is left without one. If the close is cancelled (or the block is left by a
cancellation), requests in flight are cancelled and every prompt still unanswered raises
:class:`~aurora_swarm.PoolClosedError` in its submitter.
"""

from __future__ import annotations

import enum
import math
import time
from collections import Counter, deque
from collections.abc import Mapping
from types import TracebackType

import anyio
import attrs
from anyio.abc import TaskGroup

from ._exceptions import (
    ConfigurationError,
    EndpointUnavailable,
    HTTPStatusError,
    OverloadError,
    PoolClosedError,
    PromptError,
    RequestError,
)
from ._pool import VLLMPool
from ._response import Response

__all__ = ["BatcherStats", "MicroBatcher"]

_CLOSED_IN_FLIGHT = "the MicroBatcher was closed before this prompt's answer came"



@attrs.frozen
class BatcherStats:
    """What a :class:`MicroBatcher` has done so far (a snapshot).

    Attributes
    ----------
    max_batch : int
        The batcher's ``max_batch``.
    submitted : int
        Prompts accepted by :meth:`MicroBatcher.submit`.
    refused : int
        Prompts refused with :class:`~aurora_swarm.OverloadError` (queue full).
    cancelled : int
        Submitters cancelled before their answer came (a prompt still waiting is never sent).
    answered : int
        Prompts settled with a successful answer.
    failed : int
        Prompts settled with a failed answer or an error.
    batches : int
        Batches sent (each one ``post_batch`` request).
    resent : int
        Prompts sent again through ``send_all_batched`` after their batch's request failed.
    batch_sizes : dict of int to int
        How full the batches were: number of batches sent with each size.
    waiting : int
        Prompts waiting to be sent now.
    in_flight : int
        Batches in flight now.
    """

    max_batch: int
    submitted: int
    refused: int
    cancelled: int
    answered: int
    failed: int
    batches: int
    resent: int
    batch_sizes: Mapping[int, int]
    waiting: int
    in_flight: int

    @property
    def mean_batch_size(self) -> float:
        """Mean prompts per batch (0 before the first batch)."""
        sent = sum(size * count for size, count in self.batch_sizes.items())
        return sent / self.batches if self.batches else 0.0

    @property
    def mean_fill(self) -> float:
        """Mean batch size as a fraction of ``max_batch`` (1.0: every batch was full)."""
        return self.mean_batch_size / self.max_batch


class _State(enum.Enum):
    UNOPENED = "not started"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _Waiter:
    """One submitted prompt and the place its answer goes."""

    __slots__ = ("done", "error", "key", "prompt", "queued", "response", "since")

    def __init__(self, prompt: str, key: int | None, since: float) -> None:
        self.prompt = prompt
        self.key = key
        self.since = since
        self.queued = True
        self.done = anyio.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Coalesce concurrent one-prompt calls into batched requests (see the module docstring).

    .. versionadded:: 0.1.0

    Parameters
    ----------
    pool : VLLMPool
        The pool (or sub-pool) the batches go to; the batcher does not close it.
    max_batch : int
        Most prompts in one batch (``>= 1``; ``1`` sends each prompt alone).
    max_wait_ms : float
        Longest time, in milliseconds, the oldest waiting prompt waits for its batch to fill
        (``>= 0``; ``0`` sends whatever is waiting as soon as a request may go).
    max_queue : int
        Most prompts waiting to be sent; :meth:`submit` refuses more with
        :class:`~aurora_swarm.OverloadError`.
    max_tokens : int or None
        Default ``max_tokens`` of a submitted prompt; ``None`` lets the pool size it.
    max_in_flight : int or None
        Most batches in flight at once; ``None`` allows 32 per agent of ``pool`` (at most
        2048), the pool's own default request limit.

    Examples
    --------
    Eight agents ask one question each; two full batches of four go out (on
    :class:`~aurora_swarm.testing.FakeFleet`, whose agents answer ``"ECHO: "`` and the
    prompt):

    >>> import anyio
    >>> from aurora_swarm import MicroBatcher, VLLMPool
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def agent(batcher, question, answers):
    ...     answers[question] = (await batcher.submit(question)).text
    >>> async def demo():
    ...     answers = {}
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         async with MicroBatcher(pool, max_batch=4, max_wait_ms=100) as batcher:
    ...             async with anyio.create_task_group() as group:
    ...                 for k in range(8):
    ...                     group.start_soon(agent, batcher, f"question {k}", answers)
    ...     return answers["question 5"], batcher.stats().batch_sizes
    >>> anyio.run(demo)
    ('ECHO: question 5', {4: 2})
    """

    def __init__(
        self,
        pool: VLLMPool,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 10.0,
        max_queue: int = 1024,
        max_tokens: int | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        _check_int(max_batch, "max_batch")
        _check_int(max_queue, "max_queue")
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, int | float) or not (
            0 <= max_wait_ms < math.inf
        ):
            raise ConfigurationError(
                f"max_wait_ms must be a finite number >= 0 (milliseconds), got {max_wait_ms!r}")
        if max_tokens is not None:
            _check_int(max_tokens, "max_tokens")
        if max_in_flight is None:
            max_in_flight = min(32 * pool.size, 2048)
        _check_int(max_in_flight, "max_in_flight")
        self._pool = pool
        self._calls = pool._failures_as_data()  # failures come back as data, strict pool or not
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000.0
        self._max_queue = max_queue
        self._max_tokens = max_tokens
        self._max_in_flight = max_in_flight
        self._state = _State.UNOPENED
        self._group: TaskGroup | None = None
        self._queues: dict[int | None, deque[_Waiter]] = {}
        self._waiting = 0
        self._wakeup = anyio.Event()
        self._slots = anyio.Semaphore(max_in_flight)
        self._in_flight = 0
        self._collecting = False
        self._drained = anyio.Event()
        self._inline: set[anyio.CancelScope] = set()
        self._busy = [0] * pool.size
        self._cursor = 0
        self._counts: Counter[str] = Counter()
        self._sizes: Counter[int] = Counter()

    # -- what it is -----------------------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        """Most prompts in one batch."""
        return self._max_batch

    @property
    def max_wait_ms(self) -> float:
        """Longest wait of the oldest prompt for its batch to fill, in milliseconds."""
        return self._max_wait * 1000.0

    @property
    def max_queue(self) -> int:
        """Most prompts waiting to be sent."""
        return self._max_queue

    @property
    def max_in_flight(self) -> int:
        """Most batches in flight at once."""
        return self._max_in_flight

    def __repr__(self) -> str:
        return (f"<MicroBatcher max_batch={self._max_batch} max_wait_ms={self.max_wait_ms:g} "
                f"max_queue={self._max_queue}, {self._state.value}>")

    def stats(self) -> BatcherStats:
        """Counters and the histogram of batch sizes, as they are now."""
        c = self._counts
        return BatcherStats(
            max_batch=self._max_batch, submitted=c["submitted"], refused=c["refused"],
            cancelled=c["cancelled"], answered=c["answered"], failed=c["failed"],
            batches=sum(self._sizes.values()), resent=c["resent"],
            batch_sizes=dict(sorted(self._sizes.items())), waiting=self._waiting,
            in_flight=self._in_flight,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> MicroBatcher:
        if self._state is not _State.UNOPENED:
            raise PoolClosedError(f"this MicroBatcher is {self._state.value}; it is entered once")
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        self._state = _State.OPEN
        self._collecting = True
        group.start_soon(self._collect)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        group = self._group
        try:
            if not cancelled:
                await self.aclose()
        finally:
            self._state = _State.CLOSED
            if group is not None:
                self._group = None
                if not self._drained.is_set():
                    group.cancel_scope.cancel()
                    for scope in self._inline:
                        scope.cancel()
                try:
                    # A body's own exception is not the task group's: pass on cancellation only.
                    await group.__aexit__(*((exc_type, exc, tb) if cancelled else (None,) * 3))
                finally:
                    self._fail_waiting()

    async def aclose(self) -> None:
        """Stop taking prompts, send every waiting one now, and wait for all their answers.

        Safe to call twice and from any task; a second call waits like the first.
        """
        if self._state is _State.UNOPENED:
            self._state = _State.CLOSED
            self._drained.set()
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
            self._wake()
        await self._drained.wait()
        self._state = _State.CLOSED

    def _fail_waiting(self) -> None:
        for queue in self._queues.values():
            for waiter in queue:
                waiter.queued = False
                self._settle(waiter, error=PoolClosedError(
                    "the MicroBatcher was closed before this prompt was sent"))
        self._queues.clear()
        self._waiting = 0

    # -- submitting -----------------------------------------------------------------------------

    async def submit(self, prompt: str, *, max_tokens: int | None = None) -> Response:
        """Queue one prompt and wait for its answer.

        Parameters
        ----------
        prompt : str
            The prompt, sent to ``/v1/completions`` (through the pool's chat template, if any).
        max_tokens : int or None
            Tokens to generate; ``None`` uses the batcher's ``max_tokens``. Only prompts with
            the same value share a batch.

        Returns
        -------
        Response
            This prompt's answer; a failure is a failed response (raised, with a strict pool).

        Raises
        ------
        OverloadError
            At once, when ``max_queue`` prompts are already waiting.
        PoolClosedError
            When the batcher is not open, or was closed before the prompt was sent.
        PromptError
            When ``prompt`` is not a string.
        """
        if self._state is not _State.OPEN:
            unopened = self._state is _State.UNOPENED
            hint = "enter it with `async with`" if unopened else "make a new one"
            raise PoolClosedError(f"this MicroBatcher is {self._state.value}; {hint}")
        if not isinstance(prompt, str):
            raise PromptError(None, f"submit() takes a str prompt, got {type(prompt).__name__}")
        if max_tokens is not None:
            _check_int(max_tokens, "max_tokens")
        if self._waiting >= self._max_queue:
            self._counts["refused"] += 1
            raise OverloadError(
                f"MicroBatcher queue is full: max_queue={self._max_queue} prompts are already "
                "waiting to be sent; submit more slowly, retry later, or raise max_queue")
        key = self._max_tokens if max_tokens is None else max_tokens
        waiter = _Waiter(prompt, key, time.monotonic())
        queue = self._queues.setdefault(key, deque())
        queue.append(waiter)
        self._waiting += 1
        self._counts["submitted"] += 1
        try:
            if self._max_batch == 1 and len(queue) == 1 and self._take_slot():
                await self._send_inline(waiter)
            elif len(queue) >= self._max_batch:
                self._send_full(key)
            elif len(queue) == 1:
                self._wake()  # a new oldest prompt: a new deadline
            if not waiter.done.is_set():
                await waiter.done.wait()
        except BaseException:
            if waiter.queued:  # never sent: take it out so it is not
                queue.remove(waiter)
                waiter.queued = False
                self._waiting -= 1
                if not queue and self._queues.get(key) is queue:
                    del self._queues[key]
            if waiter.response is None and waiter.error is None:
                self._counts["cancelled"] += 1
            raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.response is not None
        return waiter.response

    # -- collecting -----------------------------------------------------------------------------

    def _wake(self) -> None:
        self._wakeup.set()

    def _due(self, now: float) -> tuple[bool, int | None, float]:
        """A group whose batch should go now (oldest first), else the seconds until one is due."""
        found, chosen, oldest, next_deadline = False, None, math.inf, math.inf
        flush = self._state is not _State.OPEN
        for key, queue in self._queues.items():
            head = queue[0].since
            deadline = head + self._max_wait
            if flush or len(queue) >= self._max_batch or now >= deadline:
                if head < oldest:
                    found, chosen, oldest = True, key, head
            else:
                next_deadline = min(next_deadline, deadline)
        return found, chosen, next_deadline - now

    async def _collect(self) -> None:
        try:
            while True:
                found, key, wait = self._due(time.monotonic())
                if not found:
                    if self._state is not _State.OPEN and not self._waiting:
                        return
                    with anyio.move_on_after(wait):
                        await self._wakeup.wait()
                    if self._wakeup.is_set():
                        self._wakeup = anyio.Event()
                    continue
                try:
                    self._slots.acquire_nowait()
                except anyio.WouldBlock:
                    await self._slots.acquire()  # meanwhile, the batch keeps filling
                self._launch(key)
        finally:
            self._collecting = False
            self._check_drained()

    def _take_slot(self) -> bool:
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            return False
        return True

    async def _send_inline(self, waiter: _Waiter) -> None:
        """Send a batch of one from its submitter's task: nothing to coalesce, one hop fewer.

        Cancelling the submitter cancels only its own request; closing the batcher cancels it
        like a batch in the task group.
        """
        scope = anyio.CancelScope()
        self._inline.add(scope)
        try:
            with scope:
                await self._send(*self._claim(waiter.key), inline=True)
        finally:
            self._inline.discard(scope)
        if scope.cancelled_caught:
            self._settle(waiter, error=PoolClosedError(_CLOSED_IN_FLIGHT))

    def _send_full(self, key: int | None) -> None:
        """Start a full batch from the submitting task, saving the collector's turn."""
        if self._take_slot():
            self._launch(key)
        else:
            self._wake()  # the collector sends it when a slot frees

    def _launch(self, key: int | None) -> None:
        """Start sending the next batch of ``key``; the caller holds an in-flight slot for it."""
        if not self._queues.get(key):  # its submitters were cancelled meanwhile
            self._slots.release()
            return
        assert self._group is not None
        self._group.start_soon(self._send, *self._claim(key))

    def _claim(self, key: int | None) -> tuple[list[_Waiter], int | None, int]:
        """The next batch of ``key`` (not empty) and the agent it goes to, counted in flight."""
        batch = self._take(key)
        self._in_flight += 1
        agent = self._pick(time.monotonic())
        self._busy[agent] += 1
        return batch, key, agent

    def _take(self, key: int | None) -> list[_Waiter]:
        queue = self._queues.get(key)
        if not queue:
            return []
        batch = [queue.popleft() for _ in range(min(self._max_batch, len(queue)))]
        for waiter in batch:
            waiter.queued = False
        self._waiting -= len(batch)
        if not queue:
            del self._queues[key]
        return batch

    def _pick(self, now: float) -> int:
        """The agent with the fewest batches in flight, round-robin among equals; rested last."""
        size = len(self._busy)
        start = self._cursor
        self._cursor = (start + 1) % size
        best, best_rank = start, (math.inf, math.inf)
        for step in range(size):
            agent = (start + step) % size
            rest = self._pool._health(agent).wait_time(now)
            rank = (rest, 0.0) if rest > 0 else (0.0, float(self._busy[agent]))
            if rank < best_rank:
                best, best_rank = agent, rank
        return best

    def _check_drained(self) -> None:
        if not self._collecting and not self._in_flight and self._state is not _State.OPEN:
            self._drained.set()

    # -- sending --------------------------------------------------------------------------------

    async def _send(
        self, batch: list[_Waiter], key: int | None, agent: int, *, inline: bool = False
    ) -> None:
        self._sizes[len(batch)] += 1
        try:
            outcomes = await self._calls.post_batch(agent, [w.prompt for w in batch],
                                                    max_tokens=key)
            again = []
            for waiter, outcome in zip(batch, outcomes, strict=True):
                if _resend(outcome, len(batch)):
                    again.append(waiter)
                else:
                    self._deliver(waiter, outcome, 0)
            if again:
                self._counts["resent"] += len(again)
                await self._fallback(again, key)
        except Exception as exc:  # from the pool (closed, a bug): each submitter gets it
            for waiter in batch:
                self._settle(waiter, error=exc)
        finally:
            self._busy[agent] -= 1
            self._in_flight -= 1
            self._slots.release()
            if not inline:  # an unsettled waiter here means the batcher is being torn down
                for waiter in batch:
                    self._settle(waiter, error=PoolClosedError(_CLOSED_IN_FLIGHT))
            self._check_drained()

    async def _fallback(self, waiters: list[_Waiter], key: int | None) -> None:
        outcomes = await self._calls.send_all_batched([w.prompt for w in waiters], max_tokens=key)
        for waiter, outcome in zip(waiters, outcomes, strict=True):
            self._deliver(waiter, outcome, 1)

    def _deliver(self, waiter: _Waiter, outcome: Response, extra: int) -> None:
        if extra:
            outcome = attrs.evolve(outcome, attempts=outcome.attempts + extra)
        if self._pool.strict and outcome.exception is not None:
            self._settle(waiter, error=outcome.exception)  # raised in its submitter, as post()
        else:
            self._settle(waiter, response=outcome)

    def _settle(
        self, waiter: _Waiter, *, response: Response | None = None,
        error: BaseException | None = None,
    ) -> None:
        if waiter.done.is_set():
            return
        waiter.response, waiter.error = response, error
        self._counts["answered" if response is not None and response.success else "failed"] += 1
        waiter.done.set()


def _endpoint_fault(outcome: Response) -> bool:
    exc = outcome.exception
    return isinstance(exc, RequestError) and (exc.retryable or isinstance(exc, EndpointUnavailable))


def _resend(outcome: Response, batch_size: int) -> bool:
    """Whether a prompt of a failed ``post_batch`` request might be answered by another try."""
    exc = outcome.exception
    return _endpoint_fault(outcome) or (batch_size > 1 and isinstance(exc, HTTPStatusError))


def _check_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
