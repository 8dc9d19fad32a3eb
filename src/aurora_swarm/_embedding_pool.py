"""`EmbeddingPool`: vectors for many texts from OpenAI-compatible ``/v1/embeddings`` servers.

Texts go out in batches, a list ``input`` per request, over the same dispatch as batched
completions (chunking, retries, moving work off failed endpoints, health, statistics). Each
vector is placed by the ``index`` the server gives it, never by its position in the answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import anyio
import attrs

from ._config import Chunking, HealthPolicy, RetryPolicy, Timeouts
from ._dispatch import BatchJob, DispatchSettings, EndpointRecord
from ._endpoint import Endpoint, EndpointLike, as_endpoint
from ._env import API_KEY, env_fallback
from ._exceptions import ConfigurationError, PoolClosedError, RequestError, SwarmError
from ._stats import PoolStats
from ._transport import BatchReply, Choice, Transport

__all__ = ["EmbeddingPool", "EmbeddingResponse"]

# An embedding costs one forward pass and no generation: a server embeds a few hundred texts
# about as fast as a few dozen, so chunks start at 128 texts (32 for completions).
EMBEDDING_CHUNKING = Chunking(min_chunk=128)


@attrs.frozen
class EmbeddingResponse:
    """The vector of one text, or why there is none.

    Attributes
    ----------
    success:
        ``True`` when ``embedding`` holds the text's vector.
    embedding:
        The vector (``None`` on failure).
    error:
        A readable reason on failure, else ``None``.
    agent_index:
        Index, in the pool that sent it, of the endpoint that answered (or last tried).
    latency:
        Seconds from sending the request that answered to its answer.
    attempts:
        How many requests carried this text.
    endpoint:
        The endpoint that answered (or last tried).
    exception:
        The typed error on failure.
    """

    success: bool
    embedding: list[float] | None = None
    error: str | None = None
    agent_index: int = -1
    latency: float = 0.0
    attempts: int = 1
    endpoint: Endpoint | None = None
    exception: SwarmError | None = attrs.field(default=None, eq=False)


@attrs.define(eq=False)
class _Core:
    transport: Transport
    model: str
    settings: DispatchSettings
    limiter: anyio.CapacityLimiter
    records: dict[Endpoint, EndpointRecord]
    closed: bool = False


class EmbeddingPool:
    """A pool of embedding servers (OpenAI-compatible ``/v1/embeddings``).

    Parameters
    ----------
    endpoints:
        :class:`~aurora_swarm.Endpoint` objects, ``"host:port"`` strings, URLs or
        ``(host, port)`` pairs; at least one.
    model:
        The served embedding model (as in ``/v1/models``).
    concurrency:
        Most requests in flight over the whole pool (sub-pools share it).
    timeout:
        Seconds for a request of one text, or a :class:`~aurora_swarm.Timeouts`.
    retry, health, chunking:
        The :class:`~aurora_swarm.RetryPolicy`, :class:`~aurora_swarm.HealthPolicy` and
        :class:`~aurora_swarm.Chunking` of batched calls, as for :class:`~aurora_swarm.VLLMPool`
        (chunks start at 128 texts: ``Chunking(min_chunk=128)``).
    api_key:
        Bearer token for the servers; defaults to ``$AURORA_SWARM_API_KEY`` or ``"EMPTY"``.

    Examples
    --------
    :class:`~aurora_swarm.testing.FakeFleet` serves ``/v1/embeddings`` with a vector made from
    each text (:func:`~aurora_swarm.testing.expected_embedding`):

    >>> import anyio
    >>> from aurora_swarm import EmbeddingPool
    >>> from aurora_swarm.testing import FakeFleet, expected_embedding
    >>> async def demo(texts):
    ...     async with FakeFleet(2) as fleet, EmbeddingPool(fleet.endpoints, fleet.model) as pool:
    ...         return await pool.embed_all(texts)
    >>> texts = ["a cat", "a dog", "a cat"]
    >>> [r.embedding == expected_embedding(t) for r, t in zip(anyio.run(demo, texts), texts)]
    [True, True, True]

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        endpoints: Iterable[EndpointLike],
        model: str,
        concurrency: int | None = None,
        timeout: float | Timeouts = 60.0,
        *,
        retry: RetryPolicy | None = None,
        health: HealthPolicy | None = None,
        chunking: Chunking | None = None,
        api_key: str | None = None,
    ) -> None:
        if isinstance(endpoints, str | Endpoint):
            raise ConfigurationError("endpoints must be a list of endpoints, not a single one")
        resolved = [as_endpoint(item, k) for k, item in enumerate(endpoints)]
        if not resolved:
            raise ConfigurationError("endpoints is empty: a pool needs at least one endpoint")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
        chunking = chunking or EMBEDDING_CHUNKING
        if concurrency is None:
            concurrency = max(len(resolved) * chunking.max_in_flight, 32)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts(request=timeout)
        transport = Transport(api_key=env_fallback(api_key, API_KEY, str) or "EMPTY",
                              connect_timeout=timeouts.connect, max_connections=concurrency)
        records: dict[Endpoint, EndpointRecord] = {}
        for endpoint in resolved:
            records.setdefault(endpoint, EndpointRecord(endpoint))
        settings = DispatchSettings(chunking, retry or RetryPolicy(), health or HealthPolicy(),
                                    timeouts)
        self._core = _Core(transport, model, settings, anyio.CapacityLimiter(concurrency),
                           records)
        self._endpoints: tuple[Endpoint, ...] = tuple(resolved)
        self._owner = True

    def _view(self, endpoints: Sequence[Endpoint]) -> EmbeddingPool:
        pool = EmbeddingPool.__new__(EmbeddingPool)
        pool._core = self._core
        pool._endpoints = tuple(endpoints)
        pool._owner = False
        return pool

    async def __aenter__(self) -> EmbeddingPool:
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
            raise PoolClosedError("this EmbeddingPool is closed; create a new one")

    @property
    def size(self) -> int:
        """Number of endpoints."""
        return len(self._endpoints)

    def __len__(self) -> int:
        return len(self._endpoints)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The pool's endpoints; an agent index is a position in this tuple."""
        return self._endpoints

    @property
    def model(self) -> str:
        """The served embedding model requests ask for."""
        return self._core.model

    @property
    def timeout(self) -> float | None:
        """Seconds for a request of one text (``None``: no limit)."""
        return self._core.settings.timeouts.request

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else "open"
        return f"<EmbeddingPool {self._core.model!r}: {self.size} endpoints, {state}>"

    def stats(self) -> PoolStats:
        """Counters for this pool's endpoints (requests, texts, retries, failures)."""
        records = self._core.records
        return PoolStats.collect((e, records[e].counters) for e in self._endpoints)

    # -- sub-pools ------------------------------------------------------------------------------

    def by_tag(self, key: str, value: str | None = None) -> EmbeddingPool:
        """Endpoints whose tag ``key`` equals ``value`` (or is present, when ``value`` is None)."""
        return self._view([e for e in self._endpoints
                           if key in e.tags and (value is None or e.tags[key] == value)])

    def select(self, indices: Iterable[int]) -> EmbeddingPool:
        """The endpoints at ``indices``, in that order."""
        chosen = []
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int) or not (
                    0 <= index < self.size):
                raise ConfigurationError(
                    f"agent index {index!r} is out of range: this pool has {self.size} endpoints")
            chosen.append(self._endpoints[index])
        return self._view(chosen)

    def sample(self, n: int, *, seed: int | None = None) -> EmbeddingPool:
        """``min(n, size)`` endpoints chosen at random (without replacement)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"sample({n!r}): n must be an int >= 0")
        return self._view(random.Random(seed).sample(list(self._endpoints), min(n, self.size)))

    def slice(self, start: int, stop: int | None = None) -> EmbeddingPool:
        """Endpoints ``start`` up to (not including) ``stop``, like ``endpoints[start:stop]``."""
        return self._view(self._endpoints[start:stop])

    # -- requests -------------------------------------------------------------------------------

    async def embed_one(self, agent_index: int, text: str) -> EmbeddingResponse:
        """The vector of ``text`` from endpoint ``agent_index`` (one request, retried there).

        As in the earlier system, an ``agent_index`` outside the pool gives a failed response
        (``"Invalid agent_index ..."``) rather than an exception.
        """
        self._check_open()
        if not isinstance(text, str):
            raise ConfigurationError(f"text must be a str, got {type(text).__name__}")
        if isinstance(agent_index, bool) or not isinstance(agent_index, int) or not (
                0 <= agent_index < self.size):
            error = ConfigurationError(
                f"Invalid agent_index {agent_index!r}: this pool has {self.size} endpoints")
            return EmbeddingResponse(False, None, str(error), agent_index, exception=error)
        core = self._core
        endpoint = self._endpoints[agent_index]
        timeout = core.settings.timeouts.for_chunk(1)
        attempts = 0

        async def attempt(number: int) -> EmbeddingResponse:
            nonlocal attempts
            attempts = number
            async with core.limiter:
                reply = await core.transport.embeddings(endpoint, [text], {"model": core.model},
                                                        timeout)
            (choice,) = reply.choices
            if isinstance(choice, SwarmError):
                raise choice
            return EmbeddingResponse(True, choice.embedding, None, agent_index, reply.latency,
                                     number, endpoint)

        try:
            return await core.settings.retry.call(attempt)
        except RequestError as exc:
            return EmbeddingResponse(False, None, str(exc), agent_index, attempts=attempts,
                                     endpoint=endpoint, exception=exc)

    async def embed_all(self, texts: Sequence[str]) -> list[EmbeddingResponse]:
        """The vector of every text, batched over every endpoint; ``out[i]`` is ``texts[i]``'s.

        Texts are cut into chunks that endpoints pull as they have room, each chunk ONE
        ``/v1/embeddings`` request with a list ``input``. Failed chunks move to other endpoints;
        a text that still fails gets a failed :class:`EmbeddingResponse`.
        """
        self._check_open()
        if isinstance(texts, str):
            raise ConfigurationError("texts must be a list of strings, not one string")
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigurationError(
                    f"texts[{index}] must be a str, got {type(text).__name__}")
        if not texts:
            return []
        if not self.size:
            raise ConfigurationError("this pool has no endpoints to send texts to")
        core = self._core
        vectors: list[list[float] | None] = [None] * len(texts)

        async def send(endpoint: Endpoint, items: list[tuple[int, str]], _shape: None,
                       timeout: float | None) -> BatchReply:
            reply = await core.transport.embeddings(
                endpoint, [text for _, text in items], {"model": core.model}, timeout)
            for (index, _), choice in zip(items, reply.choices, strict=True):
                if isinstance(choice, Choice):
                    vectors[index] = choice.embedding
            return reply

        async def probe(endpoint: Endpoint) -> bool:
            return await core.transport.health(endpoint, core.settings.health.probe_timeout)

        job: BatchJob[tuple[int, str], None] = BatchJob(
            [core.records[e] for e in self._endpoints], list(enumerate(texts)),
            [None] * len(texts), send=send, probe=probe, settings=core.settings,
            limiter=core.limiter)
        return [
            EmbeddingResponse(r.success, vectors[i] if r.success else None, r.error,
                              r.agent_index, r.latency, r.attempts, r.endpoint, r.exception)
            for i, r in enumerate(await job.run())
        ]
