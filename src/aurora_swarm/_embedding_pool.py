"""`EmbeddingPool`: vectors for many texts from OpenAI-compatible ``/v1/embeddings`` servers.

Texts go out in batches, a list ``input`` per request, over the same dispatch as batched
completions (chunking, retries, moving work off failed endpoints, health, statistics). Each
vector is placed by the ``index`` the server gives it; only an answer whose vectors carry no
index at all, one vector per text, is read in text order.

Requests go through the OpenAI client's typed call, ``embeddings.create(model=..., input=...)``
(see :meth:`Transport.embeddings <aurora_swarm._transport.Transport.embeddings>`), so a test
that replaces ``openai.AsyncOpenAI`` with a mock sees every request.

Not every server embeds a list. One that answers a list of texts with fewer vectors than texts
(it embedded one of them) and a second list of two with one vector (a server that takes lists
but lost a vector once answers the two), or refuses a list (HTTP 400, 404, 405 or 422) while it
answers a string, is marked as taking one text a request, as :mod:`aurora_swarm._capabilities`
tells for completions; from then on (and for the chunk at hand) its texts go one a request, on
the same endpoint, ``fallback_concurrency`` at once
(:func:`~aurora_swarm._fallback.one_by_one`). The first list answered in full marks an endpoint
as taking lists, and it is not tested again. What is learnt is kept per endpoint and shared by
sub-pools.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence

import anyio
import attrs
import httpx2

from ._capabilities import NOT_SUPPORTED_STATUSES, Capabilities, Detected
from ._config import Chunking, HealthPolicy, RetryPolicy, Timeouts
from ._dispatch import BatchJob, DispatchSettings
from ._endpoint import Endpoint, EndpointLike, as_endpoint
from ._env import API_KEY, env_fallback
from ._exceptions import (
    ConfigurationError,
    HTTPStatusError,
    PoolClosedError,
    RequestError,
    SwarmError,
)
from ._fallback import after_list_refusal, one_by_one
from ._record import EndpointRecord
from ._response import Usage
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
    detected: dict[Endpoint, Detected]
    closed: bool = False


class EmbeddingPool:
    """A pool of embedding servers (OpenAI-compatible ``/v1/embeddings``).

    Every request is the OpenAI client's ``embeddings.create(model=..., input=...)`` on the
    endpoint's ``openai.AsyncOpenAI`` client, made before the pool's first request, one per
    endpoint in endpoint order: a test may replace ``openai.AsyncOpenAI`` with a mock, as tests
    of the earlier system do.

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
    fallback_concurrency:
        One-text requests in flight at once to an endpoint that embeds one text a request (see
        :meth:`capabilities`), over all calls and sub-pools.

        .. versionadded:: 0.1.0
    transport:
        The HTTP transport every request of the pool goes through (an
        ``httpx2.AsyncBaseTransport``); by default the network. Tests give the
        :attr:`~aurora_swarm.testing.FakeFleet.transport` of a ``FakeFleet(..., in_process=True)``,
        a :class:`~aurora_swarm.testing.MockTransport` that answers in-process, without sockets.

        .. versionadded:: 0.1.0

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

    A server that embeds one text a request gets its texts one a request, once its first
    answer shows it:

    >>> from aurora_swarm.testing import EndpointBehavior
    >>> async def one_text(texts):
    ...     async with FakeFleet(1, in_process=True,
    ...                          behaviors=[EndpointBehavior(list_inputs=False)]) as fleet:
    ...         async with EmbeddingPool(fleet.endpoints, fleet.model,
    ...                                  transport=fleet.transport) as pool:
    ...             out = await pool.embed_all(texts)
    ...             return [r.embedding == expected_embedding(t) for r, t in zip(out, texts)], [
    ...                 c.list_prompts for c in pool.capabilities().values()]
    >>> anyio.run(one_text, ["a cat", "a dog", "a bird"])
    ([True, True, True], [False])

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
        fallback_concurrency: int = 16,
        transport: httpx2.AsyncBaseTransport | None = None,
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
        if (isinstance(fallback_concurrency, bool) or not isinstance(fallback_concurrency, int)
                or fallback_concurrency < 1):
            raise ConfigurationError(
                f"fallback_concurrency must be a positive int, got {fallback_concurrency!r}")
        if transport is not None and not isinstance(transport, httpx2.AsyncBaseTransport):
            raise ConfigurationError(
                f"transport must be an httpx2.AsyncBaseTransport, got {type(transport).__name__}")
        timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts(request=timeout)
        wire = Transport(api_key=env_fallback(api_key, API_KEY, str) or "EMPTY",
                         connect_timeout=timeouts.connect, max_connections=concurrency,
                         http_transport=transport)
        records: dict[Endpoint, EndpointRecord] = {}
        detected: dict[Endpoint, Detected] = {}
        for endpoint in resolved:
            if endpoint not in records:
                records[endpoint] = EndpointRecord(endpoint)
                detected[endpoint] = Detected(anyio.CapacityLimiter(fallback_concurrency))
        settings = DispatchSettings(chunking, retry or RetryPolicy(), health or HealthPolicy(),
                                    timeouts)
        self._core = _Core(wire, model, settings, anyio.CapacityLimiter(concurrency), records,
                           detected)
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
        """Counters for this pool's endpoints (requests, texts, retries, failures).

        A chunk sent one text a request counts each of its requests.
        """
        records = self._core.records
        return PoolStats.collect(((e, records[e].counters) for e in self._endpoints),
                                 capabilities=self.capabilities())

    def capabilities(self) -> dict[Endpoint, Capabilities]:
        """Whether each endpoint of this pool takes a list of texts a request.

        ``list_prompts`` is ``True`` once a list was answered in full, ``False`` once the
        endpoint answered a list with fewer vectors than texts or refused one while it answered
        a string (its texts then go one a request), ``None`` until then; the other fields stay
        ``None``. Shared by sub-pools.

        .. versionadded:: 0.1.0
        """
        detected = self._core.detected
        return {e: Capabilities(list_prompts=detected[e].list_prompts) for e in self._endpoints}

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
        """The vector of ``text`` from endpoint ``agent_index`` (one request with a string
        ``input``, which every server takes, retried there).

        The request counts in :meth:`stats` (its retries and failures too), and its outcome in
        the endpoint's health, as those of :meth:`VLLMPool.post <aurora_swarm.VLLMPool.post>` do.

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
        self._make_clients()
        endpoint = self._endpoints[agent_index]
        settings = core.settings
        timeout = settings.timeouts.for_chunk(1)
        record = core.records[endpoint]
        attempts = 0

        async def attempt(number: int) -> EmbeddingResponse:
            nonlocal attempts
            attempts = number

            async def send() -> tuple[Choice, Usage | None, float]:
                async with core.limiter:
                    start = time.perf_counter()
                    choice, usage = await core.transport.embedding(
                        endpoint, text, {"model": core.model}, timeout)
                    return choice, usage, time.perf_counter() - start

            choice, _, latency = await record.one_prompt_request(
                send, number, settings.health, settings.retry)
            return EmbeddingResponse(True, choice.embedding, None, agent_index, latency, number,
                                     endpoint)

        try:
            return await settings.retry.call(attempt)
        except RequestError as exc:
            return EmbeddingResponse(False, None, str(exc), agent_index, attempts=attempts,
                                     endpoint=endpoint, exception=exc)

    async def embed_all(self, texts: Sequence[str]) -> list[EmbeddingResponse]:
        """The vector of every text, batched over every endpoint; ``out[i]`` is ``texts[i]``'s.

        Texts are shared out over the endpoints as for
        :meth:`VLLMPool.send_all_batched <aurora_swarm.VLLMPool.send_all_batched>` (on alike,
        fresh endpoints text ``i`` goes to endpoint ``i % size``), a few chunks an endpoint, each
        chunk ONE ``/v1/embeddings`` request with a list ``input`` (one request a text to an
        endpoint that embeds one text a request: see the module and :meth:`capabilities`).
        Failed chunks move to other endpoints; a text that still fails gets a failed
        :class:`EmbeddingResponse`. ``agent_index`` is the endpoint that answered.
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
        self._make_clients()
        vectors: list[list[float] | None] = [None] * len(texts)

        async def send(endpoint: Endpoint, items: list[tuple[int, str]], _shape: None,
                       timeout: float | None) -> BatchReply:
            reply = await self._send(endpoint, [text for _, text in items], timeout)
            for (index, _), choice in zip(items, reply.choices, strict=True):
                # The first answer wins, as for the dispatcher's results (a backup may answer
                # the same text again).
                if isinstance(choice, Choice) and vectors[index] is None:
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

    def _make_clients(self) -> None:
        """Make the ``openai.AsyncOpenAI`` client of each endpoint not yet connected, in the
        pool's order, before any request goes out.

        Then the n-th client made is the n-th endpoint's whatever order requests go out in, as
        when the earlier system made them all at once: a test that hands out mock clients in
        that order (``side_effect=[client0, client1, ...]``) finds each on its endpoint. Made
        once per endpoint (a fraction of a millisecond each); later calls only look them up.
        """
        transport = self._core.transport
        for endpoint in self._endpoints:
            transport.client(endpoint)

    async def _send(self, endpoint: Endpoint, texts: list[str],
                    timeout: float | None) -> BatchReply:
        """One chunk to ``endpoint``: one request with a list ``input``, or one request a text
        to an endpoint that embeds one text a request (found out here: see the module)."""
        core = self._core
        transport = core.transport
        detected = core.detected[endpoint]
        counters = core.records[endpoint].counters
        params = {"model": core.model}
        one_timeout = core.settings.timeouts.for_chunk(1)

        async def send_one(text: str) -> tuple[Choice, Usage | None]:
            return await transport.embedding(endpoint, text, params, one_timeout)

        def count_one() -> None:
            counters.requests += 1

        async def one_a_request(first: tuple[Choice, Usage | None] | None = None) -> BatchReply:
            return await one_by_one(send_one, texts, endpoint, limiter=detected.limiter,
                                    timeout=timeout, first=first, on_send=count_one)

        if detected.list_prompts is False:
            # The dispatcher counted one batched request; what goes out is one per text.
            counters.requests -= 1
            counters.batch_requests -= 1
            return await one_a_request()
        try:
            reply = await transport.embeddings(endpoint, texts, params, timeout)
        except HTTPStatusError as refusal:
            if (detected.list_prompts is not None
                    or refusal.status_code not in NOT_SUPPORTED_STATUSES):
                raise

            async def send_list(first_only: list[str]) -> BatchReply:
                return await transport.embeddings(endpoint, first_only, params, one_timeout)

            first = await after_list_refusal(detected, refusal, texts, send_one, send_list,
                                             counters)
            return await one_a_request(first)
        if len(texts) > 1 and detected.list_prompts is None:
            if reply.items < len(texts):
                # Fewer vectors than texts: a server that embeds one text a request, or a
                # passing fault of one that takes lists? Ask once more with two texts: only a
                # server that answers those with one vector is sent one text a request (every
                # text of this chunk again: there is no telling whose vector it sent).
                counters.requests += 1
                counters.batch_requests += 1
                check = await transport.embeddings(endpoint, texts[:2], params, one_timeout)
                if check.items < 2:
                    detected.list_prompts = False
                    return await one_a_request()
            detected.list_prompts = True
        return reply
