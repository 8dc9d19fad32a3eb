"""Results as they come: :func:`stream_batched` over a pool's ``send_all_batched``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import TracebackType

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._config import POOL_DEFAULT, PoolDefault
from ._exceptions import ConfigurationError
from ._formats import ChatTemplateSetting
from ._pool import VLLMPool
from ._prompts import Prompt
from ._response import Response

__all__ = ["ResultStream", "stream_batched"]

_Item = tuple[int, Response]


class ResultStream:
    """``(index, response)`` pairs of a batched call, in the order prompts settle.

    .. versionadded:: 0.1.0

    Made by :func:`stream_batched`; enter it with ``async with``. Leaving the block (also by
    ``break`` or an exception) cancels whatever is still in flight. An error of the call itself
    (a bad argument, a model the fleet does not serve, or :class:`~aurora_swarm.BatchError` of a
    strict pool) is raised by the iteration, after the results that came before it.
    """

    def __init__(
        self, pool: VLLMPool, prompts: Sequence[Prompt], max_tokens: int | None,
        chat_template: ChatTemplateSetting | PoolDefault, system_prompt: str | PoolDefault | None,
    ) -> None:
        self._pool = pool
        self._prompts = prompts
        self._max_tokens = max_tokens
        self._chat_template = chat_template
        self._system_prompt = system_prompt
        self._group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[_Item] | None = None
        self._error: Exception | None = None
        self._responses: list[Response] | None = None

    async def __aenter__(self) -> ResultStream:
        if self._group is not None:
            raise RuntimeError("a ResultStream can be entered only once")
        send, self._receive = anyio.create_memory_object_stream[_Item](math.inf)
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._produce, send)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        assert self._receive is not None
        self._group.cancel_scope.cancel()
        # The producer keeps its errors to itself, so the group has none to add: an error in
        # the ``async with`` body leaves unwrapped, not inside an exception group.
        await self._group.__aexit__(None, None, None)
        self._receive.close()

    async def _produce(self, send: MemoryObjectSendStream[_Item]) -> None:
        with send:
            try:
                self._responses = await self._pool.send_all_batched(
                    self._prompts, self._max_tokens, chat_template=self._chat_template,
                    system_prompt=self._system_prompt,
                    on_result=lambda index, response: send.send_nowait((index, response)),
                )
            except Exception as exc:  # handed to the consumer, raised by its iteration
                self._error = exc

    def __aiter__(self) -> ResultStream:
        return self

    async def __anext__(self) -> tuple[int, Response]:
        if self._receive is None:
            raise RuntimeError("use `async with stream_batched(...) as results:` first")
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            error, self._error = self._error, None
            if error is not None:
                raise error from None
            raise StopAsyncIteration from None

    async def ordered(self) -> list[Response]:
        """Wait for every prompt; return all responses in input order (``out[i]`` answers i).

        Pairs not yet taken from the stream are consumed; call errors are raised.
        """
        async for _ in self:
            pass
        if self._responses is None:  # pragma: no cover - the iteration raised instead
            raise RuntimeError("the call ended without results")
        return self._responses


def stream_batched(
    pool: VLLMPool, prompts: Sequence[Prompt], max_tokens: int | None = None,
    *, chat_template: ChatTemplateSetting | PoolDefault = POOL_DEFAULT,
    system_prompt: str | PoolDefault | None = POOL_DEFAULT,
) -> ResultStream:
    """Run ``pool.send_all_batched(prompts, ...)`` and stream each result as it settles.

    .. versionadded:: 0.1.0

    Parameters
    ----------
    pool:
        The pool (or a sub-pool).
    prompts:
        Strings, or conversations when a chat template is set.
    max_tokens, chat_template, system_prompt:
        As for :meth:`VLLMPool.send_all_batched <aurora_swarm.VLLMPool.send_all_batched>`.

    Returns
    -------
    ResultStream
        An async context manager; inside it, ``async for index, response in results``.

    Examples
    --------
    On :class:`~aurora_swarm.testing.FakeFleet`, whose agents answer ``"ECHO: "`` and the
    prompt:

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.jobs import stream_batched
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo():
    ...     settled = {}
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         async with stream_batched(pool, ["a", "b", "c"]) as results:
    ...             async for index, response in results:  # as each prompt settles
    ...                 settled[index] = response.text
    ...         async with stream_batched(pool, ["d", "e"]) as results:
    ...             answers = await results.ordered()  # or all of them, in input order
    ...     return sorted(settled.items()), [a.text for a in answers]
    >>> anyio.run(demo)
    ([(0, 'ECHO: a'), (1, 'ECHO: b'), (2, 'ECHO: c')], ['ECHO: d', 'ECHO: e'])
    """
    if isinstance(prompts, str):
        raise ConfigurationError("prompts must be a list of prompts, not one string")
    return ResultStream(pool, prompts, max_tokens, chat_template, system_prompt)
