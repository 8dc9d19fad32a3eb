"""`AgentPool`: a pool of agents that are not OpenAI servers (``POST /generate``)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import anyio
import attrs

from ._config import RetryPolicy
from ._endpoint import Endpoint, EndpointLike, as_endpoint
from ._env import API_KEY, env_fallback
from ._exceptions import ConfigurationError, PoolClosedError, RequestError
from ._response import Response
from ._transport import Transport

__all__ = ["AgentPool"]


@attrs.define(eq=False)
class _AgentCore:
    """What an agent pool and its sub-pools share."""

    transport: Transport
    limiter: anyio.CapacityLimiter
    retry: RetryPolicy
    timeout: float
    closed: bool = False


class AgentPool:
    """A pool of generic agents: each answers ``POST /generate`` with ``{"prompt": ...}``.

    For agents that are not OpenAI-compatible servers (an agent framework behind a small HTTP
    service). An agent replies with JSON holding its answer in ``response`` (or ``text``). Calls
    keep input order and return failures as data, as :class:`~aurora_swarm.VLLMPool` does;
    every pattern runs on an agent pool.

    Parameters
    ----------
    endpoints:
        :class:`~aurora_swarm.Endpoint` objects, ``"host:port"`` strings, URLs or
        ``(host, port)`` pairs; at least one.
    concurrency:
        Most requests in flight over the whole pool (sub-pools share it).
    connector_limit:
        Most open connections to any one agent.
    timeout:
        Seconds an agent has to answer one request.
    retry:
        The :class:`~aurora_swarm.RetryPolicy` for failed requests.
    api_key:
        Bearer token sent to the agents; defaults to ``$AURORA_SWARM_API_KEY`` or ``"EMPTY"``.

    Examples
    --------
    :class:`~aurora_swarm.testing.FakeFleet` serves ``/generate`` too:

    >>> import anyio
    >>> from aurora_swarm import AgentPool
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo():
    ...     async with FakeFleet(2) as fleet, AgentPool(fleet.endpoints) as pool:
    ...         return await pool.send_all(["a", "b", "c"])
    >>> [(r.text, r.agent_index) for r in anyio.run(demo)]
    [('ECHO: a', 0), ('ECHO: b', 1), ('ECHO: c', 0)]

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        endpoints: Iterable[EndpointLike],
        concurrency: int = 512,
        connector_limit: int = 1024,
        timeout: float = 120.0,
        *,
        retry: RetryPolicy | None = None,
        api_key: str | None = None,
    ) -> None:
        if isinstance(endpoints, str | Endpoint):
            raise ConfigurationError("endpoints must be a list of endpoints, not a single one")
        resolved = [as_endpoint(item, k) for k, item in enumerate(endpoints)]
        if not resolved:
            raise ConfigurationError("endpoints is empty: a pool needs at least one endpoint")
        for name, value in (("concurrency", concurrency), ("connector_limit", connector_limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
        transport = Transport(api_key=env_fallback(api_key, API_KEY, str) or "EMPTY",
                              connect_timeout=min(10.0, timeout),
                              max_connections=min(concurrency, connector_limit))
        self._core = _AgentCore(transport, anyio.CapacityLimiter(concurrency),
                                retry or RetryPolicy(), float(timeout))
        self._endpoints: tuple[Endpoint, ...] = tuple(resolved)
        self._owner = True

    def _view(self, endpoints: Sequence[Endpoint]) -> AgentPool:
        pool = AgentPool.__new__(AgentPool)
        pool._core = self._core
        pool._endpoints = tuple(endpoints)
        pool._owner = False
        return pool

    async def __aenter__(self) -> AgentPool:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool's connections. Safe to call twice; a sub-pool leaves them open."""
        if not self._owner or self._core.closed:
            return
        self._core.closed = True
        await self._core.transport.aclose()

    close = aclose

    def _check_open(self) -> None:
        if self._core.closed:
            raise PoolClosedError("this AgentPool is closed; create a new one")

    @property
    def size(self) -> int:
        """Number of agents."""
        return len(self._endpoints)

    def __len__(self) -> int:
        return len(self._endpoints)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The agents; an agent index is a position in this tuple."""
        return self._endpoints

    @property
    def timeout(self) -> float:
        """Seconds an agent has to answer one request."""
        return self._core.timeout

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else "open"
        return f"<AgentPool: {self.size} agents, {state}>"

    # -- sub-pools ------------------------------------------------------------------------------

    def by_tag(self, key: str, value: str | None = None) -> AgentPool:
        """Agents whose tag ``key`` equals ``value`` (or is present, when ``value`` is None)."""
        return self._view([e for e in self._endpoints
                           if key in e.tags and (value is None or e.tags[key] == value)])

    def select(self, indices: Iterable[int]) -> AgentPool:
        """The agents at ``indices``, in that order."""
        return self._view([self._endpoints[self._agent(i)] for i in indices])

    def sample(self, n: int, *, seed: int | None = None) -> AgentPool:
        """``min(n, size)`` agents chosen at random (without replacement)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"sample({n!r}): n must be an int >= 0")
        return self._view(random.Random(seed).sample(list(self._endpoints), min(n, self.size)))

    def slice(self, start: int, stop: int | None = None) -> AgentPool:
        """Agents ``start`` up to (not including) ``stop``, like ``endpoints[start:stop]``."""
        return self._view(self._endpoints[start:stop])

    def _agent(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigurationError(f"agent index must be an int, got {index!r}")
        if not 0 <= index < self.size:
            raise ConfigurationError(
                f"agent index {index} is out of range: this pool has {self.size} agents")
        return index

    # -- requests -------------------------------------------------------------------------------

    async def post(self, agent_index: int, prompt: str, max_tokens: int | None = None) -> Response:
        """One ``/generate`` request to agent ``agent_index`` (``max_tokens`` is not sent).

        Retryable failures are retried on the same agent under the pool's
        :class:`~aurora_swarm.RetryPolicy`; a failure that remains is returned as a failed
        :class:`~aurora_swarm.Response`.
        """
        self._check_open()
        self._agent(agent_index)
        if not isinstance(prompt, str):
            raise ConfigurationError(f"prompt must be a str, got {type(prompt).__name__}")
        return await self._post(agent_index, prompt)

    async def _post(self, agent_index: int, prompt: str) -> Response:
        core = self._core
        endpoint = self._endpoints[agent_index]
        attempts = 0

        async def attempt(number: int) -> Response:
            nonlocal attempts
            attempts = number
            async with core.limiter:
                text, latency = await core.transport.generate(endpoint, prompt, core.timeout)
            return Response(success=True, text=text, agent_index=agent_index, latency=latency,
                            attempts=number, endpoint=endpoint)

        try:
            return await core.retry.call(attempt)
        except RequestError as exc:
            return Response.failure(exc, agent_index=agent_index, attempts=attempts,
                                    endpoint=endpoint)

    async def send_all(self, prompts: Sequence[str], max_tokens: int | None = None
                       ) -> list[Response]:
        """``prompts[i]`` to agent ``i % size``, concurrently; ``out[i]`` answers ``prompts[i]``."""
        self._check_open()
        if isinstance(prompts, str):
            raise ConfigurationError("prompts must be a list of strings, not one string")
        prompts = list(prompts)
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise ConfigurationError(
                    f"prompts[{index}] must be a str, got {type(prompt).__name__}")
        if prompts and not self.size:
            raise ConfigurationError("this pool has no agents to send prompts to")
        results: list[Response | None] = [None] * len(prompts)
        next_index = 0

        async def worker() -> None:  # as many workers as requests may be in flight
            nonlocal next_index
            while next_index < len(prompts):
                index = next_index
                next_index += 1
                results[index] = await self._post(index % self.size, prompts[index])

        async with anyio.create_task_group() as group:
            for _ in range(min(len(prompts), int(self._core.limiter.total_tokens))):
                group.start_soon(worker)
        return [r for r in results if r is not None]

    async def send_all_batched(self, prompts: Sequence[str], max_tokens: int | None = None
                               ) -> list[Response]:
        """The same as :meth:`send_all`: ``/generate`` takes one prompt a request."""
        return await self.send_all(prompts, max_tokens)

    async def broadcast_prompt(self, prompt: str, max_tokens: int | None = None
                               ) -> list[Response]:
        """``prompt`` to every agent; ``out[k]`` is agent k's answer."""
        return await self.send_all([prompt] * self.size, max_tokens)
