"""`VLLMPool`: one object for a whole fleet of OpenAI-compatible inference servers."""

from __future__ import annotations

import functools
import math
import random
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import attrs
import httpx2
import openai

from . import _env
from ._calllog import CallLog
from ._capabilities import NOT_SUPPORTED_STATUSES, Capabilities, Detected
from ._compat import DEFAULT_MODEL, PoolLimits, batch_timeouts, one_of
from ._config import (
    POOL_DEFAULT,
    Chunking,
    HealthPolicy,
    PoolDefault,
    RetryPolicy,
    Timeouts,
)
from ._dispatch import BatchJob, DispatchSettings
from ._endpoint import Endpoint, EndpointLike, as_endpoint
from ._env import env_fallback
from ._exceptions import (
    BatchError,
    ConfigurationError,
    HTTPStatusError,
    PoolClosedError,
    PromptError,
    RequestError,
    RequestTimeout,
)
from ._fallback import after_list_refusal, one_by_one
from ._formats import ChatTemplateSetting, FormatResolver, Prepared
from ._health import Health
from ._progress import ProgressBar, ProgressSetting, check_progress, open_bar
from ._prompts import (
    Conversation,
    Prompt,
    as_conversation,
    check_prompt,
    check_prompts,
    sizing_text,
    template_tokens,
)
from ._record import EndpointRecord
from ._response import Response, Usage
from ._sampling import check_sampling_values
from ._schedule import prefix_homes
from ._sizing import ContextSizer
from ._stats import PoolStats
from ._transport import (
    BatchReply,
    Choice,
    ModelInfo,
    ServerGauges,
    TLSVerify,
    Transport,
    check_verify,
)

__all__ = ["VLLMPool"]

ResultHook = Callable[[int, Response], None]


@attrs.define(eq=False)
class _Core:
    """What a pool and all its sub-pools share: connections, limits, endpoint state."""

    transport: Transport
    model: str
    max_tokens: int
    use_batch: bool
    settings: DispatchSettings
    limiter: anyio.CapacityLimiter
    params: Mapping[str, Any]
    strict: bool
    records: dict[Endpoint, EndpointRecord]
    sizer: ContextSizer
    formats: FormatResolver
    chat_template: ChatTemplateSetting
    system_prompt: str | None
    prefix_chars: int
    limits: PoolLimits
    detected: dict[Endpoint, Detected]
    deadline: float | None
    closed: bool = False


def _api_key(value: str | None) -> str:
    return env_fallback(value, _env.API_KEY, str) or "EMPTY"


def _endpoint_keys(endpoints: Iterable[Endpoint]) -> dict[Endpoint, str]:
    """Each endpoint's own API key, from the environment variable its ``api_key_env`` tag names.

    The keys live only in the transport's clients: never in an endpoint, a message or a file.
    """
    keys: dict[Endpoint, str] = {}
    for endpoint in endpoints:
        name = endpoint.tags.get("api_key_env")
        if name is None:
            continue
        value = _env.named_key(name)
        if value is None:
            raise ConfigurationError(
                f"{endpoint}: the environment variable {name!r} named by api_key_env is not "
                "set or is empty; export it with the endpoint's API key")
        keys[endpoint] = value
    return keys


class VLLMPool:
    """A pool of vLLM (OpenAI-compatible) endpoints, driven from one process.

    Parameters
    ----------
    endpoints:
        :class:`~aurora_swarm.Endpoint` objects, ``"host:port"`` strings or URLs; at least one.
    model:
        The served model name (as in ``/v1/models``); ``"openai/gpt-oss-120b"`` if left out.
    max_tokens:
        Cap on generated tokens per prompt; defaults to ``$AURORA_SWARM_MAX_TOKENS`` or 512.
        A call that leaves ``max_tokens`` out sizes each prompt's budget from the model's
        context (``max_model_len`` from ``/v1/models``, fetched once) minus the prompt, never
        above this cap.
    use_batch:
        When true (default), :meth:`send_all_batched` sends many prompts per
        ``/v1/completions`` request; when false it behaves as :meth:`send_all`.
    api_key:
        Bearer token for the servers; defaults to ``$AURORA_SWARM_API_KEY`` or ``"EMPTY"``.
    timeout:
        Seconds for a one-prompt request, or a :class:`~aurora_swarm.Timeouts` (batched requests
        get more time per prompt).
    retry:
        The :class:`~aurora_swarm.RetryPolicy`.
    health:
        The :class:`~aurora_swarm.HealthPolicy` (when endpoints are benched and probed).
    chunking:
        The :class:`~aurora_swarm.Chunking` of batched calls.
    max_concurrency:
        Most HTTP requests in flight over the whole pool (sub-pools share it).
    sampling:
        Extra request fields sent with every request, e.g. ``{"temperature": 0.0, "seed": 1}``.
    strict:
        When true, calls raise :class:`~aurora_swarm.BatchError` (one exception group of
        per-prompt failures) instead of returning failed responses.
    chat_template:
        How batched prompts are formatted: ``None`` (raw text, the default), a
        :class:`~aurora_swarm.ChatTemplate`, template text, a ``.jinja`` file or a model
        directory (rendered here, sent to ``/v1/completions``), ``"server"`` (one
        ``/v1/chat/completions/batch`` request per chunk) or ``"auto"`` (the best available).
        With a chat template, prompts may also be conversations.
    system_prompt:
        A system message put first in every conversation that has none (needs a chat template
        for batched calls; :meth:`post` and :meth:`send_all` always accept it).
    prefix_affinity:
        Route batched prompts that start alike to the same endpoints, so each server's prefix
        cache computes a shared system prompt or rubric once. ``True`` compares the first
        256 characters (after chat formatting); an int sets that length; ``False`` (default)
        spreads prompts without regard to their text. Idle endpoints still take others' work,
        so nothing waits on a busy server.
    max_num_seqs:
        Sequences each server runs at once (vLLM's ``--max-num-seqs``), when known; a
        ``max_num_seqs=N`` hostfile tag sets it per endpoint. Left out, the pool reads it from
        a vLLM server's ``/metrics`` while requests wait there, and plans with 256 (vLLM's
        default) until then. Dispatch plans each endpoint's share in waves of this many.
    max_tokens_aggregation:
        A larger budget for merge steps (:attr:`max_tokens_aggregation`); defaults to
        ``$AURORA_SWARM_MAX_TOKENS_AGGREGATION`` or twice ``max_tokens``.
    model_max_context:
        The model's context length in tokens; defaults to ``$AURORA_SWARM_MODEL_MAX_CONTEXT``,
        else ``/v1/models`` is asked once.
    buffer:
        Tokens of the context an answer leaves free after its prompt (default 512, as in the
        earlier system): a prompt near the context limit gets a ``max_tokens`` that much
        smaller, but never below what fits or 128 tokens, so the buffer never refuses a prompt.
        Prompts near the limit are counted exactly with the server's tokenizer; ``buffer=0``
        lets an answer use all the room the context leaves.
    concurrency:
        The earlier name of ``max_concurrency``.
    connector_limit:
        Most open connections to any one endpoint (default: ``max_concurrency``).
    batch_concurrency, timeout_per_sequence:
        The earlier batch time limit: a batched request gets ``timeout_per_sequence /
        batch_concurrency`` seconds per prompt on top of ``timeout`` (defaults 60 s and 256,
        ``timeout_per_sequence`` from ``$AURORA_SWARM_TIMEOUT_PER_SEQUENCE``); left out, the
        ``per_prompt`` of :class:`~aurora_swarm.Timeouts` applies. ``batch_concurrency`` is
        also the earlier name of ``max_num_seqs``.
    batch_timeout_cap:
        Most seconds any batched request may take.
    fallback_concurrency:
        One-prompt requests in flight at once to an endpoint that takes no list of prompts
        (Ollama, llama-cpp-python; see :meth:`capabilities`), over all calls and sub-pools.

        .. versionadded:: 0.1.0
    deadline:
        Seconds a :meth:`send_all_batched` or :meth:`send_all` call may take in all; prompts
        still unanswered then fail with a :class:`~aurora_swarm.RequestTimeout` saying so, and
        the requests still in flight are called off. ``None`` (default): a call ends when every
        prompt is answered or has failed, each prompt carried by at most
        ``retry.max_attempts`` requests of at most ``Timeouts.for_chunk`` seconds each (see
        :doc:`/servers`).

        .. versionadded:: 0.1.0
    verify:
        TLS verification of ``https`` endpoints: ``True`` (default) against the system's
        certificate authorities, a path to a CA bundle (a PEM file or a folder) to trust a
        site's own CA, or ``False`` (not verified; for tests only).

        .. versionadded:: 0.1.0
    env_proxies:
        Send requests through the proxy the environment names (``http_proxy``,
        ``https_proxy``, ``all_proxy``, minus the hosts in ``no_proxy``), as curl and most HTTP
        clients do (default). ``False`` connects to every endpoint directly, which is what a
        fleet on a cluster's own network needs. When a request through a proxy fails, its error
        names the proxy. See :doc:`/servers`.

        .. versionadded:: 0.1.0
    transport:
        The HTTP transport every request of the pool goes through (an
        ``httpx2.AsyncBaseTransport``); by default the network. Tests give the
        :attr:`~aurora_swarm.testing.FakeFleet.transport` of a ``FakeFleet(..., in_process=True)``,
        a :class:`~aurora_swarm.testing.MockTransport` that answers in-process, without sockets.

        .. versionadded:: 0.1.0

    Examples
    --------
    On a cluster the endpoints come from :func:`~aurora_swarm.parse_hostfile`; here from
    :class:`~aurora_swarm.testing.FakeFleet`, whose agents answer ``"ECHO: "`` and the prompt:

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo():
    ...     async with FakeFleet(2) as fleet:
    ...         async with VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...             answers = await pool.send_all_batched(["What is 2 + 2?", "Name a prime."])
    ...     return [a.text for a in answers]
    >>> anyio.run(demo)
    ['ECHO: What is 2 + 2?', 'ECHO: Name a prime.']
    """

    def __init__(
        self,
        endpoints: Iterable[EndpointLike],
        model: str = DEFAULT_MODEL,
        *,
        max_tokens: int | None = None,
        use_batch: bool = True,
        api_key: str | None = None,
        timeout: float | Timeouts = 600.0,
        retry: RetryPolicy | None = None,
        health: HealthPolicy | None = None,
        chunking: Chunking | None = None,
        max_concurrency: int | None = None,
        sampling: Mapping[str, Any] | None = None,
        strict: bool = False,
        chat_template: ChatTemplateSetting = None,
        system_prompt: str | None = None,
        prefix_affinity: int | bool = False,
        max_num_seqs: int | None = None,
        max_tokens_aggregation: int | None = None,
        model_max_context: int | None = None,
        buffer: int | None = None,
        concurrency: int | None = None,
        connector_limit: int | None = None,
        batch_concurrency: int | None = None,
        timeout_per_sequence: float | None = None,
        batch_timeout_cap: float | None = None,
        fallback_concurrency: int = 16,
        deadline: float | None = None,
        verify: TLSVerify = True,
        env_proxies: bool = True,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        if isinstance(endpoints, str | Endpoint):
            raise ConfigurationError("endpoints must be a list of endpoints, not a single one")
        resolved = [as_endpoint(item, k) for k, item in enumerate(endpoints)]
        if not resolved:
            raise ConfigurationError("endpoints is empty: a pool needs at least one endpoint")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
        limits = PoolLimits.resolve(
            max_tokens=max_tokens, max_tokens_aggregation=max_tokens_aggregation,
            model_max_context=model_max_context, buffer=buffer)
        timeouts = batch_timeouts(timeout, batch_concurrency=batch_concurrency,
                                  timeout_per_sequence=timeout_per_sequence,
                                  batch_timeout_cap=batch_timeout_cap)
        chunking = chunking or Chunking()
        max_concurrency = one_of("max_concurrency", max_concurrency, "concurrency", concurrency)
        if max_concurrency is None:
            max_concurrency = max(len(resolved) * chunking.max_in_flight,
                                  min(32 * len(resolved), 2048))
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if connector_limit is not None and connector_limit < 1:
            raise ConfigurationError(f"connector_limit must be >= 1, got {connector_limit}")
        if sampling:
            _check_sampling(sampling)
        if not isinstance(env_proxies, bool):
            raise ConfigurationError(f"env_proxies must be True or False, got {env_proxies!r}")
        if transport is not None and not isinstance(transport, httpx2.AsyncBaseTransport):
            raise ConfigurationError(
                f"transport must be an httpx2.AsyncBaseTransport, got {type(transport).__name__}")
        wire = Transport(api_key=_api_key(api_key), connect_timeout=timeouts.connect,
                         max_connections=min(max_concurrency, connector_limit or max_concurrency),
                         api_keys=_endpoint_keys(resolved), verify=check_verify(verify),
                         env_proxies=env_proxies, http_transport=transport)
        sizer = ContextSizer(wire, model, context=limits.model_max_context,
                             buffer=limits.buffer)
        FormatResolver.check(chat_template)  # a bad path or template fails here, not later
        affinity = _affinity_chars(prefix_affinity)
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ConfigurationError(
                f"system_prompt must be a str, got {type(system_prompt).__name__}")
        # The earlier batch_concurrency is vLLM's --max-num-seqs too (it also sets timeouts).
        max_num_seqs = one_of("max_num_seqs", max_num_seqs, "batch_concurrency",
                              batch_concurrency)
        if max_num_seqs is not None and (
                isinstance(max_num_seqs, bool) or not isinstance(max_num_seqs, int)
                or max_num_seqs < 1):
            raise ConfigurationError(f"max_num_seqs must be an int >= 1, got {max_num_seqs!r}")
        if (isinstance(fallback_concurrency, bool) or not isinstance(fallback_concurrency, int)
                or fallback_concurrency < 1):
            raise ConfigurationError(
                f"fallback_concurrency must be a positive int, got {fallback_concurrency!r}")
        _check_deadline(deadline)
        records: dict[Endpoint, EndpointRecord] = {}
        detected: dict[Endpoint, Detected] = {}
        for endpoint in resolved:
            if endpoint not in records:
                record = records[endpoint] = EndpointRecord(endpoint)
                record.health.name = str(endpoint)
                slots = _slots_of(endpoint, max_num_seqs)
                if slots is not None:
                    record.server.learn_slots(slots, "option")
                detected[endpoint] = Detected(anyio.CapacityLimiter(fallback_concurrency))
        self._core = _Core(
            transport=wire,
            model=model,
            max_tokens=limits.max_tokens,
            use_batch=use_batch,
            settings=DispatchSettings(chunking, retry or RetryPolicy(), health or HealthPolicy(),
                                      timeouts),
            limiter=anyio.CapacityLimiter(max_concurrency),
            params=dict(sampling or {}),
            strict=strict,
            records=records,
            sizer=sizer,
            formats=FormatResolver(wire, sizer),
            chat_template=chat_template,
            system_prompt=system_prompt,
            prefix_chars=affinity,
            limits=limits,
            detected=detected,
            deadline=deadline,
        )
        self._endpoints: tuple[Endpoint, ...] = tuple(resolved)
        self._owner = True
        self._raising = True

    @classmethod
    def _view(
        cls, parent: VLLMPool, endpoints: Sequence[Endpoint], *, raising: bool | None = None
    ) -> VLLMPool:
        pool = cls.__new__(cls)
        pool._core = parent._core
        pool._endpoints = tuple(endpoints)
        pool._owner = False
        pool._raising = parent._raising if raising is None else raising
        return pool

    def _failures_as_data(self) -> VLLMPool:
        """This pool's view whose calls return failed responses even when the pool is strict
        (for callers inside the package that sort failures out themselves)."""
        return VLLMPool._view(self, self._endpoints, raising=False)

    def _health(self, agent_index: int) -> Health:
        """The live health the pool keeps for agent ``agent_index``'s endpoint."""
        return self._core.records[self._endpoints[agent_index]].health

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> VLLMPool:
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
            raise PoolClosedError("this VLLMPool is closed; create a new one")

    # -- what the pool is -----------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The pool's endpoints; an agent index is a position in this tuple."""
        return self._endpoints

    @property
    def size(self) -> int:
        """Number of endpoints (agents)."""
        return len(self._endpoints)

    def __len__(self) -> int:
        return len(self._endpoints)

    @property
    def model(self) -> str:
        """The served model name requests ask for."""
        return self._core.model

    @property
    def use_batch(self) -> bool:
        """Whether :meth:`send_all_batched` batches."""
        return self._core.use_batch

    @property
    def max_tokens(self) -> int:
        """The cap on generated tokens per prompt."""
        return self._core.max_tokens

    @property
    def max_tokens_aggregation(self) -> int:
        """A larger token budget for merge steps, for code that passes it as ``max_tokens``."""
        return self._core.limits.max_tokens_aggregation

    @property
    def model_max_context(self) -> int | None:
        """The context length given at construction (``None``: asked of ``/v1/models``)."""
        return self._core.limits.model_max_context

    @property
    def buffer(self) -> int:
        """Tokens of the context kept free besides each prompt and its answer."""
        return self._core.limits.buffer

    @property
    def chat_template(self) -> ChatTemplateSetting:
        """How batched prompts are formatted (the ``chat_template`` the pool was made with)."""
        return self._core.chat_template

    @property
    def strict(self) -> bool:
        """Whether failed prompts are raised (:class:`~aurora_swarm.BatchError`) instead of
        returned as failed responses."""
        return self._core.strict

    @property
    def system_prompt(self) -> str | None:
        """The pool's default system prompt."""
        return self._core.system_prompt

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else "open"
        return f"<VLLMPool {self._core.model!r}: {self.size} endpoints, {state}>"

    def openai_client(self, agent_index: int) -> openai.AsyncOpenAI:
        """The ``AsyncOpenAI`` client of agent ``agent_index``, for calls the pool does not make
        (``await pool.openai_client(0).models.list()``). Its retries are off; the pool owns it."""
        self._check_open()
        return self._core.transport.client(self._agent(agent_index))

    # -- private names earlier scripts read: they still read, with a DeprecationWarning that
    # names the public property (a private name may change without notice; these will not).

    @property
    def _model(self) -> str:
        _private("_model", "model")
        return self.model

    @property
    def _max_tokens(self) -> int:
        _private("_max_tokens", "max_tokens")
        return self.max_tokens

    @property
    def _max_tokens_aggregation(self) -> int:
        _private("_max_tokens_aggregation", "max_tokens_aggregation")
        return self.max_tokens_aggregation

    @property
    def _model_max_context(self) -> int | None:
        _private("_model_max_context", "model_max_context")
        return self.model_max_context

    @property
    def _buffer(self) -> int:
        _private("_buffer", "buffer")
        return self.buffer

    @property
    def _openai_clients(self) -> dict[int, openai.AsyncOpenAI]:
        _private("_openai_clients[i]", "openai_client(i)")
        return {k: self.openai_client(k) for k in range(self.size)}

    # -- sub-pools ------------------------------------------------------------------------------

    # A selection may be empty (``size == 0``, as ``by_tag`` of a role nobody plays); sending
    # prompts to an empty pool raises ConfigurationError.

    def by_tag(self, key: str, value: str | None = None) -> VLLMPool:
        """Endpoints whose tag ``key`` equals ``value`` (or is present, when ``value`` is None).

        May be empty (``size == 0``) when no endpoint has the tag.
        """
        chosen = [e for e in self._endpoints
                  if key in e.tags and (value is None or e.tags[key] == value)]
        return VLLMPool._view(self, chosen)

    def select(self, indices: Iterable[int]) -> VLLMPool:
        """The endpoints at ``indices`` (agent indices of this pool), in that order."""
        indices = list(indices)
        for index in indices:
            self._agent(index)
        return VLLMPool._view(self, [self._endpoints[i] for i in indices])

    def sample(self, n: int, *, seed: int | None = None) -> VLLMPool:
        """``min(n, size)`` endpoints chosen at random (without replacement)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"sample({n!r}): n must be an int >= 0")
        chosen = random.Random(seed).sample(list(self._endpoints), min(n, self.size))
        return VLLMPool._view(self, chosen)

    def slice(self, start: int, stop: int | None = None) -> VLLMPool:
        """Endpoints ``start`` up to (not including) ``stop``, like ``endpoints[start:stop]``."""
        return VLLMPool._view(self, self._endpoints[start:stop])

    def _check_agents(self, count: int) -> None:
        if count and not self._endpoints:
            raise ConfigurationError(
                "this pool has no endpoints (an empty selection): nothing can answer")

    def _agent(self, index: int) -> Endpoint:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigurationError(f"agent index must be an int, got {index!r}")
        if not 0 <= index < self.size:
            raise ConfigurationError(
                f"agent index {index} is out of range: this pool has {self.size} endpoints "
                f"(0..{self.size - 1})"
            )
        return self._endpoints[index]

    # -- statistics -----------------------------------------------------------------------------

    def stats(self) -> PoolStats:
        """Counters for this pool's endpoints; safe to read while a call runs.

        Each endpoint's :class:`~aurora_swarm.EndpointStats` also carries its
        :class:`~aurora_swarm.Capabilities` as known at that moment.
        """
        records = self._core.records
        return PoolStats.collect(((e, records[e].counters) for e in self._endpoints),
                                 {e: records[e].server for e in self._endpoints},
                                 self.capabilities())

    def capabilities(self) -> dict[Endpoint, Capabilities]:
        """What each endpoint of this pool has shown it can do (``None``: not seen yet).

        Learnt from the requests calls send anyway, once per endpoint, and shared by sub-pools:
        an endpoint that refuses a list of prompts but answers one string prompt gets its
        prompts one a request (``fallback_concurrency`` at once); one without ``/health`` is
        probed with ``/v1/models``.

        .. versionadded:: 0.1.0
        """
        core = self._core
        return {e: core.detected[e].snapshot(core.formats.chat_batch_known(e),
                                             core.records[e].server.metrics)
                for e in self._endpoints}

    async def model_info(self) -> ModelInfo | None:
        """What ``/v1/models`` says about the model (fetched once per pool, then cached)."""
        self._check_open()
        return await self._core.sizer.info(self._endpoints)

    # -- single requests ------------------------------------------------------------------------

    async def post(
        self, agent_index: int, prompt: Prompt, max_tokens: int | None = None,
        *, system_prompt: str | PoolDefault | None = POOL_DEFAULT,
        sampling: Mapping[str, Any] | None = None,
    ) -> Response:
        """One ``/v1/chat/completions`` request to agent ``agent_index``.

        ``prompt`` is a string (sent as one user message) or a conversation; the server applies
        the model's chat template. Retryable failures are retried on the same agent under the
        pool's :class:`~aurora_swarm.RetryPolicy`; a failure that remains is returned as a failed
        :class:`~aurora_swarm.Response` (raised in strict mode).
        """
        self._check_open()
        self._agent(agent_index)
        check_prompt(prompt, conversations=True)
        _check_optional_max_tokens(max_tokens)
        messages = as_conversation(prompt, self._system_prompt(system_prompt))
        response = await self._post_unchecked(agent_index, messages, max_tokens,
                                               self._params(sampling))
        return self._finish_one(response)

    async def _post_unchecked(
        self, agent: int, messages: Conversation, max_tokens: int | None,
        params: Mapping[str, Any],
    ) -> Response:
        (budget,) = await self._core.sizer.budgets(
            [sizing_text(messages)], max_tokens, self._core.max_tokens, self._endpoints,
            [template_tokens(messages)])
        if isinstance(budget, PromptError):
            return Response.failure(budget, agent_index=agent)
        return await self._chat_with_retry(agent, self._endpoints[agent], messages, budget,
                                           params)

    def _finish_one(self, response: Response) -> Response:
        if self._core.strict and self._raising and response.exception is not None:
            raise response.exception
        return response

    async def _chat_with_retry(
        self, agent_index: int, endpoint: Endpoint, messages: Conversation, budget: int,
        params: Mapping[str, Any],
    ) -> Response:
        core = self._core
        record = core.records[endpoint]
        settings = core.settings
        body = {**params, "max_tokens": budget}
        timeout = settings.timeouts.for_chunk(1)
        attempts = 0

        async def attempt(number: int) -> Response:
            nonlocal attempts
            attempts = number

            async def send() -> tuple[Choice, Usage | None, float]:
                async with core.limiter:
                    return await core.transport.chat(endpoint, messages, body, timeout)

            choice, usage, latency = await record.one_prompt_request(
                send, number, settings.health, settings.retry)
            return Response(
                success=True, text=choice.text, agent_index=agent_index,
                finish_reason=choice.finish_reason, usage=usage, latency=latency,
                attempts=number, endpoint=endpoint,
            )

        try:
            return await settings.retry.call(attempt)
        except RequestError as exc:
            return Response.failure(exc, agent_index=agent_index, attempts=attempts,
                                    endpoint=endpoint)

    async def post_batch(
        self, agent_index: int, prompts: Sequence[Prompt], max_tokens: int | None = None,
        *, chat_template: ChatTemplateSetting | PoolDefault = POOL_DEFAULT,
        system_prompt: str | PoolDefault | None = POOL_DEFAULT,
        sampling: Mapping[str, Any] | None = None,
    ) -> list[Response]:
        """Exactly ONE batched request carrying every prompt, to one agent.

        The request is ``/v1/completions`` with a list prompt (or, with
        ``chat_template="server"``, one ``/v1/chat/completions/batch``). Answers are placed by
        each choice's ``index``; a missing, duplicated or out-of-range index fails exactly the
        prompts it affects. There is no retry: a failed request fails every prompt it carried
        (:meth:`send_all_batched` retries and moves work instead). An endpoint that takes no list
        of prompts (see :meth:`capabilities`) gets one request per prompt instead.
        """
        self._check_open()
        self._agent(agent_index)
        plan = await self._plan(prompts, max_tokens, chat_template, system_prompt, sampling)
        results: list[Response | None] = [None] * len(plan.shapes)
        fit = plan.fitting(results, agent_index)
        if fit:
            # One request needs one max_tokens: the smallest budget of the prompts it carries.
            shape = min((s for s in plan.shapes if isinstance(s, _Shape)),
                        key=lambda s: s.max_tokens)
            job: BatchJob[Any, _Shape] = BatchJob(
                [self._core.records[self._endpoints[agent_index]]],
                [plan.prepared.payloads[i] for i in fit], [shape] * len(fit),
                send=plan.sender, probe=self._probe,
                settings=attrs.evolve(
                    self._core.settings,
                    chunking=Chunking(chunk_size=len(fit), max_chunk=len(fit), max_in_flight=1),
                    retry=RetryPolicy(max_attempts=1),
                ),
                limiter=self._core.limiter,
                split_refused=False,
            )
            for k, response in zip(fit, await job.run(), strict=True):
                results[k] = attrs.evolve(response, agent_index=agent_index)
        return self._finish_many([r for r in results if r is not None])

    # -- many prompts ---------------------------------------------------------------------------

    async def send_all(
        self, prompts: Sequence[Prompt], *, max_tokens: int | None = None,
        system_prompt: str | PoolDefault | None = POOL_DEFAULT,
        sampling: Mapping[str, Any] | None = None,
        on_result: ResultHook | None = None, progress: ProgressSetting = False,
        deadline: float | PoolDefault | None = POOL_DEFAULT,
    ) -> list[Response]:
        """One chat request per prompt, round-robin over the agents (the non-batched baseline).

        ``out[i]`` answers ``prompts[i]``; prompt ``i`` goes to agent ``i % size``.
        ``on_result`` and ``progress`` are as for :meth:`send_all_batched`; ``deadline``
        overrides the pool's for this call.
        """
        self._check_open()
        limit = self._deadline(deadline)
        prompts = check_prompts(prompts, conversations=True)
        self._check_agents(len(prompts))
        _check_optional_max_tokens(max_tokens)
        check_progress(progress)
        bar = self._bar(progress, len(prompts), "send_all", on_result)
        try:
            return await self._send_all(prompts, max_tokens, system_prompt, sampling,
                                        bar or on_result, limit)
        finally:
            if bar is not None:
                bar.close()

    async def _send_all(
        self, prompts: Sequence[Prompt], max_tokens: int | None,
        system_prompt: str | PoolDefault | None, sampling: Mapping[str, Any] | None,
        on_result: ResultHook | None, limit: float | None = None,
    ) -> list[Response]:
        call = self._call_log("send_all")
        system = self._system_prompt(system_prompt)
        params = self._params(sampling)
        conversations = [as_conversation(p, system) for p in prompts]
        budgets = await self._core.sizer.budgets(
            [sizing_text(c) for c in conversations], max_tokens, self._core.max_tokens,
            self._endpoints, [template_tokens(c) for c in conversations])
        results: list[Response | None] = [None] * len(prompts)
        next_index = 0
        size = self.size

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(prompts):
                index = next_index
                next_index += 1
                agent = index % size
                budget = budgets[index]
                if isinstance(budget, PromptError):
                    response = Response.failure(budget, agent_index=agent)
                else:
                    response = await self._chat_with_retry(
                        agent, self._endpoints[agent], conversations[index], budget, params)
                results[index] = response
                if on_result is not None:
                    on_result(index, response)

        workers = min(len(prompts), int(self._core.limiter.total_tokens))
        with anyio.move_on_after(_forever(limit)):
            async with anyio.create_task_group() as group:
                for _ in range(workers):
                    group.start_soon(worker)
        _past_deadline(results, limit, on_result, lambda k: k % size)
        return self._finish_many([r for r in results if r is not None], call)

    async def send_all_batched(
        self, prompts: Sequence[Prompt], max_tokens: int | None = None,
        *, chat_template: ChatTemplateSetting | PoolDefault = POOL_DEFAULT,
        system_prompt: str | PoolDefault | None = POOL_DEFAULT,
        sampling: Mapping[str, Any] | None = None,
        on_result: ResultHook | None = None, progress: ProgressSetting = False,
        deadline: float | PoolDefault | None = POOL_DEFAULT,
    ) -> list[Response]:
        """Every prompt over every agent, batched; ``out[i]`` answers ``prompts[i]``.

        Each agent gets a share planned from its slots, its speed and what it already holds
        (fast agents take more; on alike, fresh agents prompt ``i`` goes to agent ``i % size``),
        sent as a few requests of many prompts each. Waiting work moves off agents that fall
        behind, failed requests move to other agents, and a prompt that still fails gets
        a failed :class:`~aurora_swarm.Response` (or, in strict mode, the call raises
        :class:`~aurora_swarm.BatchError`). With ``use_batch=False`` this is :meth:`send_all`.

        Parameters
        ----------
        prompts:
            Strings, or conversations (lists of ``{"role", "content"}`` messages) when the pool
            or call has a chat template.
        max_tokens:
            Tokens to generate per prompt; left out, sized from the model's context.
        chat_template:
            Overrides the pool's ``chat_template`` for this call.
        system_prompt:
            Overrides the pool's ``system_prompt`` for this call.
        sampling:
            Request fields for this call, on top of the pool's ``sampling``
            (e.g. ``{"temperature": 0.7, "seed": 1}``).
        on_result:
            Called as ``on_result(index, response)`` the moment each prompt is settled.
        progress:
            Draw a progress bar with ``tqdm.auto`` (a widget in Jupyter, a bar on a terminal):
            done / total, prompts/s, ETA, failed prompts and prompts retried. ``True``, or a
            mapping of ``tqdm`` keyword arguments (``{"desc": "leaves", "leave": False}``).
        deadline:
            Overrides the pool's ``deadline`` (seconds for the whole call) for this call.
        """
        if not self._core.use_batch:
            return await self.send_all(prompts, max_tokens=max_tokens,
                                       system_prompt=system_prompt, sampling=sampling,
                                       on_result=on_result, progress=progress, deadline=deadline)
        self._check_open()
        self._check_agents(len(prompts))
        check_progress(progress)
        call = self._call_log("send_all_batched")
        limit = self._deadline(deadline)
        plan = await self._plan(prompts, max_tokens, chat_template, system_prompt, sampling)
        bar = self._bar(progress, len(plan.shapes), "send_all_batched", on_result)
        try:
            return await self._dispatch(plan, bar or on_result, call, limit)
        finally:
            if bar is not None:
                bar.close()

    async def _dispatch(
        self, plan: _Plan, on_result: ResultHook | None, call: CallLog,
        limit: float | None = None,
    ) -> list[Response]:
        results: list[Response | None] = [None] * len(plan.shapes)
        fit = plan.fitting(results, -1, on_result)
        if not fit:
            return self._finish_many([r for r in results if r is not None], call)
        whole = len(fit) == len(results)
        payloads = plan.prepared.payloads
        homes = groups = None
        if self._core.prefix_chars and self.size > 1:
            sizing = plan.prepared.sizing
            homes, groups = prefix_homes([sizing[i] for i in fit], self.size,
                                         self._core.prefix_chars)
        job: BatchJob[Any, _Shape] = BatchJob(
            [self._core.records[e] for e in self._endpoints],
            payloads if whole else [payloads[i] for i in fit],
            [s for s in plan.shapes if isinstance(s, _Shape)],
            send=plan.sender, probe=self._probe, settings=self._core.settings,
            limiter=self._core.limiter,
            on_result=on_result if whole or on_result is None
            else (lambda k, r: on_result(fit[k], r)),
            homes=homes,
            groups=groups,
            gauges=self._gauges,
        )
        answers = await self._run(job, limit, on_result, fit)
        if whole:
            return self._finish_many(answers, call)
        for k, response in zip(fit, answers, strict=True):
            results[k] = response
        return self._finish_many([r for r in results if r is not None], call)

    def _deadline(self, value: float | PoolDefault | None) -> float | None:
        if isinstance(value, PoolDefault):
            return self._core.deadline
        _check_deadline(value)
        return value

    @staticmethod
    async def _run(
        job: BatchJob[Any, _Shape], limit: float | None, on_result: ResultHook | None,
        fit: list[int],
    ) -> list[Response]:
        """Run ``job``; at the deadline, call it off and fail what it has not settled."""
        if limit is None:
            return await job.run()
        with anyio.move_on_after(limit):
            return await job.run()
        hook = None if on_result is None else (lambda k, r: on_result(fit[k], r))
        _past_deadline(job.results, limit, hook, lambda k: -1)
        return [r for r in job.results if r is not None]

    async def _plan(
        self, prompts: Sequence[Prompt], max_tokens: int | None,
        chat_template: ChatTemplateSetting | PoolDefault, system_prompt: str | PoolDefault | None,
        sampling: Mapping[str, Any] | None,
    ) -> _Plan:
        """Validate, format and size a batched call's prompts."""
        core = self._core
        setting = core.chat_template if isinstance(chat_template, PoolDefault) else chat_template
        known = FormatResolver.check(setting)
        prompts = check_prompts(prompts, conversations=known is None or known.conversations)
        _check_optional_max_tokens(max_tokens)
        form = known or await core.formats.resolve(setting, self._endpoints)
        prepared = form.prepare(prompts, self._system_prompt(system_prompt))
        budgets = await core.sizer.budgets(prepared.sizing, max_tokens, core.max_tokens,
                                           self._endpoints, prepared.template_tokens)
        # One shape object per distinct shape, not per prompt: a call of 400,000 prompts keeps
        # 400,000 fewer objects alive for the garbage collector to walk.
        made: dict[tuple[int, bool | None], _Shape] = {}
        shapes = [
            b if isinstance(b, PromptError)
            else made.get((b, special)) or made.setdefault((b, special), _Shape(b, special))
            for b, special in zip(budgets, prepared.add_special_tokens, strict=True)
        ]
        send = self._send_chat_batch if form.kind == "server" else self._send_completions
        return _Plan(prepared, shapes, functools.partial(send, self._params(sampling)))

    def _params(self, sampling: Mapping[str, Any] | None) -> dict[str, Any]:
        """Request fields for a call: the pool's sampling, this call's on top, and the model."""
        if sampling:
            _check_sampling(sampling)
        return {**self._core.params, **(sampling or {}), "model": self._core.model}

    async def _send_completions(
        self, params: Mapping[str, Any], endpoint: Endpoint, prompts: list[str], shape: _Shape,
        timeout: float | None,
    ) -> BatchReply:
        params = {**params, "max_tokens": shape.max_tokens}
        if shape.add_special_tokens is not None:
            params["add_special_tokens"] = shape.add_special_tokens
        core = self._core
        transport = core.transport
        detected = core.detected[endpoint]
        counters = core.records[endpoint].counters
        one_timeout = core.settings.timeouts.for_chunk(1)

        async def send_one(prompt: str) -> tuple[Choice, Usage | None]:
            return await transport.completion(endpoint, prompt, params, one_timeout)

        def count_one() -> None:
            counters.requests += 1

        if detected.list_prompts is False:
            # The dispatcher counted one batched request; what goes out is one per prompt.
            counters.requests -= 1
            counters.batch_requests -= 1
            return await one_by_one(send_one, prompts, endpoint, limiter=detected.limiter,
                                    timeout=timeout, on_send=count_one)
        try:
            reply = await transport.completions(endpoint, prompts, params, timeout)
        except HTTPStatusError as refusal:
            if (detected.list_prompts is not None
                    or refusal.status_code not in NOT_SUPPORTED_STATUSES):
                raise

            async def send_list(first_only: list[str]) -> BatchReply:
                return await transport.completions(endpoint, first_only, params, one_timeout)

            first = await after_list_refusal(detected, refusal, prompts, send_one, send_list,
                                             counters)
            return await one_by_one(send_one, prompts, endpoint, limiter=detected.limiter,
                                    timeout=timeout, first=first, on_send=count_one)
        if len(prompts) > 1:
            detected.list_prompts = True
        return reply

    async def _send_chat_batch(
        self, params: Mapping[str, Any], endpoint: Endpoint, conversations: list[Conversation],
        shape: _Shape, timeout: float | None,
    ) -> BatchReply:
        params = {**params, "max_tokens": shape.max_tokens}
        return await self._core.transport.chat_batch(endpoint, conversations, params, timeout)

    async def _gauges(self, endpoint: Endpoint) -> ServerGauges | None:
        return await self._core.transport.load_gauges(
            endpoint, self._core.settings.health.probe_timeout)

    async def _probe(self, endpoint: Endpoint) -> bool:
        core = self._core
        transport = core.transport
        timeout = core.settings.health.probe_timeout
        detected = core.detected[endpoint]
        how = core.settings.health.probe
        if how == "completion":
            return await self._probe_completion(endpoint, timeout)
        if how == "auto" and detected.health_route is not False:
            status = await transport.health_status(endpoint, timeout)
            if status == 200:
                detected.health_route = True
                return True
            if detected.health_route or status not in (404, 405):
                return False
            detected.health_route = False  # not vLLM: /v1/models answers while the server lives
        return await transport.models_status(endpoint, timeout) == 200

    async def _probe_completion(self, endpoint: Endpoint, timeout: float) -> bool:
        """Whether the endpoint generates one token within ``timeout`` seconds."""
        params = {"model": self._core.model, "max_tokens": 1}
        try:
            await self._core.transport.completion(endpoint, "ping", params, timeout)
        except RequestError:
            return False
        return True

    def _system_prompt(self, value: str | PoolDefault | None) -> str | None:
        system = self._core.system_prompt if isinstance(value, PoolDefault) else value
        if system is not None and not isinstance(system, str):
            raise ConfigurationError(f"system_prompt must be a str, got {type(system).__name__}")
        return system

    def _bar(
        self, progress: ProgressSetting, total: int, desc: str, hook: ResultHook | None
    ) -> ProgressBar | None:
        records = [self._core.records[e] for e in dict.fromkeys(self._endpoints)]
        return open_bar(progress, total, desc, hook=hook,
                        retries=lambda: sum(r.counters.retries for r in records))

    def _call_log(self, name: str) -> CallLog:
        return CallLog(name, [self._core.records[e] for e in self._endpoints])

    def _finish_many(
        self, responses: list[Response], call: CallLog | None = None
    ) -> list[Response]:
        if call is not None:
            call.done(responses)
        if self._core.strict and self._raising:
            failures = []
            for index, response in enumerate(responses):
                if response.exception is not None:
                    exc = response.exception
                    exc.prompt_index = index  # type: ignore[attr-defined]
                    failures.append(exc)
            if failures:
                raise BatchError(f"{len(failures)} of {len(responses)} prompts failed", failures)
        return responses

    async def broadcast_prompt(
        self, prompt: Prompt, *, max_tokens: int | None = None,
        system_prompt: str | PoolDefault | None = POOL_DEFAULT,
        sampling: Mapping[str, Any] | None = None,
    ) -> list[Response]:
        """Send the same prompt to every agent (one chat request each); ``out[k]`` is agent k's."""
        self._check_open()
        check_prompt(prompt, conversations=True)
        _check_optional_max_tokens(max_tokens)
        messages = as_conversation(prompt, self._system_prompt(system_prompt))
        params = self._params(sampling)
        results: list[Response | None] = [None] * self.size

        async def one(agent: int) -> None:
            results[agent] = await self._post_unchecked(agent, messages, max_tokens, params)

        async with anyio.create_task_group() as group:
            for agent in range(self.size):
                group.start_soon(one, agent)
        return self._finish_many([r for r in results if r is not None])


@attrs.frozen
class _Shape:
    """What must be equal for prompts to share one request."""

    max_tokens: int
    add_special_tokens: bool | None


@attrs.frozen
class _Plan:
    """A batched call, ready to dispatch."""

    prepared: Prepared
    shapes: list[_Shape | PromptError]
    sender: Callable[..., Awaitable[BatchReply]]

    def fitting(
        self, results: list[Response | None], agent: int, on_result: ResultHook | None = None
    ) -> list[int]:
        """Indices of prompts that fit; the others get a failed response now."""
        fit = []
        for index, shape in enumerate(self.shapes):
            if isinstance(shape, PromptError):
                response = Response.failure(shape, agent_index=agent)
                results[index] = response
                if on_result is not None:
                    on_result(index, response)
            else:
                fit.append(index)
        return fit


def _slots_of(endpoint: Endpoint, default: int | None) -> int | None:
    """An endpoint's sequence slots from its ``max_num_seqs`` tag, else the pool's option."""
    tag = endpoint.tags.get("max_num_seqs")
    if tag is None:
        return default
    try:
        slots = int(tag)
    except ValueError:
        slots = 0
    if slots < 1:
        raise ConfigurationError(
            f"endpoint {endpoint}: tag max_num_seqs must be an int >= 1, got {tag!r}")
    return slots


def _private(name: str, public: str) -> None:
    warnings.warn(f"VLLMPool.{name} is private; use VLLMPool.{public}", DeprecationWarning,
                  stacklevel=3)
def _forever(limit: float | None) -> float:
    return math.inf if limit is None else limit


def _past_deadline(
    results: list[Response | None], limit: float | None, on_result: ResultHook | None,
    agent: Callable[[int], int],
) -> None:
    """Fail every prompt a call left unsettled at its deadline."""
    for index, response in enumerate(results):
        if response is None:
            failure = Response.failure(
                RequestTimeout(f"not answered within the call's deadline of {limit:g} s"),
                agent_index=agent(index))
            results[index] = failure
            if on_result is not None:
                on_result(index, failure)


def _check_deadline(value: object) -> None:
    if value is None:
        return
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not value > 0 or math.isinf(value)):
        raise ConfigurationError(f"deadline must be a positive number of seconds or None, "
                                 f"got {value!r}")


def _affinity_chars(value: int | bool) -> int:
    if value is True:
        return 256
    if value is False:
        return 0
    if not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"prefix_affinity must be True, False or a number of characters >= 0, got {value!r}")
    return value


_RESERVED_FIELDS = frozenset({"model", "prompt", "messages", "max_tokens", "stream", "n"})


def _check_sampling(sampling: Mapping[str, Any]) -> None:
    if not isinstance(sampling, Mapping):
        raise ConfigurationError(f"sampling must be a mapping, got {type(sampling).__name__}")
    reserved = _RESERVED_FIELDS & set(sampling)
    if reserved:
        raise ConfigurationError(
            f"sampling may not set {sorted(reserved)}: the pool sets them (max_tokens is an "
            "argument of its own; streaming and n > 1 are not supported)")
    check_sampling_values(sampling)


def _check_optional_max_tokens(value: object) -> None:
    if value is not None:
        _check_max_tokens(value, "max_tokens")


def _check_max_tokens(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
