"""`VLLMPool`: one object for a whole fleet of OpenAI-compatible inference servers."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import attrs

from ._dispatch import BatchJob, DispatchSettings, EndpointRecord, Timeouts
from ._endpoint import Endpoint, EndpointLike, as_endpoint
from ._exceptions import (
    BatchError,
    ConfigurationError,
    PoolClosedError,
    PromptError,
    RequestError,
)
from ._health import HealthPolicy
from ._response import Response
from ._retry import RetryPolicy
from ._schedule import Chunking
from ._sizing import ContextSizer
from ._stats import PoolStats
from ._transport import BatchReply, ModelInfo, Transport

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
    closed: bool = False


def _api_key(value: str | None) -> str:
    # The one place an environment variable is read: a fallback for an argument left out.
    if value is not None:
        return value
    return os.environ.get("AURORA_SWARM_API_KEY", "EMPTY")


class VLLMPool:
    """A pool of vLLM (OpenAI-compatible) endpoints, driven from one process.

    Parameters
    ----------
    endpoints:
        :class:`~aurora_swarm.Endpoint` objects, ``"host:port"`` strings or URLs; at least one.
    model:
        The served model name (as in ``/v1/models``).
    max_tokens:
        Cap on generated tokens per prompt. A call that leaves ``max_tokens`` out sizes each
        prompt's budget from the model's context (``max_model_len`` from ``/v1/models``, fetched
        once) minus the prompt, never above this cap.
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

    Examples
    --------
    .. code-block:: python

        async with VLLMPool(parse_hostfile("agents.hostfile"), model="m") as pool:
            answers = await pool.send_all_batched(prompts)
    """

    def __init__(
        self,
        endpoints: Iterable[EndpointLike],
        model: str,
        *,
        max_tokens: int = 512,
        use_batch: bool = True,
        api_key: str | None = None,
        timeout: float | Timeouts = 600.0,
        retry: RetryPolicy | None = None,
        health: HealthPolicy | None = None,
        chunking: Chunking | None = None,
        max_concurrency: int | None = None,
        sampling: Mapping[str, Any] | None = None,
        strict: bool = False,
    ) -> None:
        if isinstance(endpoints, str | Endpoint):
            raise ConfigurationError("endpoints must be a list of endpoints, not a single one")
        resolved = [as_endpoint(item, k) for k, item in enumerate(endpoints)]
        if not resolved:
            raise ConfigurationError("endpoints is empty: a pool needs at least one endpoint")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
        _check_max_tokens(max_tokens, "max_tokens")
        timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts(request=timeout)
        chunking = chunking or Chunking()
        if max_concurrency is None:
            max_concurrency = max(len(resolved) * chunking.max_in_flight,
                                  min(32 * len(resolved), 2048))
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency}")
        reserved = {"model", "prompt", "messages", "max_tokens"} & set(sampling or {})
        if reserved:
            raise ConfigurationError(f"sampling may not set {sorted(reserved)}: the pool sets them")
        transport = Transport(api_key=_api_key(api_key), connect_timeout=timeouts.connect,
                              max_connections=max_concurrency)
        records: dict[Endpoint, EndpointRecord] = {}
        for endpoint in resolved:
            records.setdefault(endpoint, EndpointRecord(endpoint))
        self._core = _Core(
            transport=transport,
            model=model,
            max_tokens=max_tokens,
            use_batch=use_batch,
            settings=DispatchSettings(chunking, retry or RetryPolicy(), health or HealthPolicy(),
                                      timeouts),
            limiter=anyio.CapacityLimiter(max_concurrency),
            params=dict(sampling or {}),
            strict=strict,
            records=records,
            sizer=ContextSizer(transport, model),
        )
        self._endpoints: tuple[Endpoint, ...] = tuple(resolved)
        self._owner = True

    @classmethod
    def _view(cls, parent: VLLMPool, endpoints: Sequence[Endpoint]) -> VLLMPool:
        pool = cls.__new__(cls)
        pool._core = parent._core
        pool._endpoints = tuple(endpoints)
        pool._owner = False
        return pool

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

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else "open"
        return f"<VLLMPool {self._core.model!r}: {self.size} endpoints, {state}>"

    # -- sub-pools ------------------------------------------------------------------------------

    def by_tag(self, key: str, value: str | None = None) -> VLLMPool:
        """Endpoints whose tag ``key`` equals ``value`` (or is present, when ``value`` is None)."""
        chosen = [e for e in self._endpoints
                  if key in e.tags and (value is None or e.tags[key] == value)]
        if not chosen:
            wanted = f"{key}={value}" if value is not None else key
            raise ConfigurationError(f"no endpoint of this pool has the tag {wanted}")
        return VLLMPool._view(self, chosen)

    def select(self, indices: Iterable[int]) -> VLLMPool:
        """The endpoints at ``indices`` (agent indices of this pool), in that order."""
        indices = list(indices)
        for index in indices:
            self._agent(index)
        if not indices:
            raise ConfigurationError("select() needs at least one agent index")
        return VLLMPool._view(self, [self._endpoints[i] for i in indices])

    def sample(self, n: int, *, seed: int | None = None) -> VLLMPool:
        """``n`` endpoints chosen at random (without replacement)."""
        if not 1 <= n <= self.size:
            raise ConfigurationError(f"sample({n}): n must be between 1 and {self.size}")
        return VLLMPool._view(self, random.Random(seed).sample(list(self._endpoints), n))

    def slice(self, start: int, stop: int | None = None) -> VLLMPool:
        """Endpoints ``start`` up to (not including) ``stop``, like ``endpoints[start:stop]``."""
        chosen = self._endpoints[start:stop]
        if not chosen:
            raise ConfigurationError(f"slice({start}, {stop}) of {self.size} endpoints is empty")
        return VLLMPool._view(self, chosen)

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
        """Counters for this pool's endpoints; safe to read while a call runs."""
        records = self._core.records
        return PoolStats.collect((e, records[e].counters) for e in self._endpoints)

    async def model_info(self) -> ModelInfo | None:
        """What ``/v1/models`` says about the model (fetched once per pool, then cached)."""
        self._check_open()
        return await self._core.sizer.info(self._endpoints)

    # -- single requests ------------------------------------------------------------------------

    async def post(
        self, agent_index: int, prompt: str, max_tokens: int | None = None
    ) -> Response:
        """One ``/v1/chat/completions`` request to agent ``agent_index``.

        The prompt is sent as one user message. Retryable failures are retried on the same
        agent under the pool's :class:`~aurora_swarm.RetryPolicy`; a failure that remains is
        returned as a failed :class:`~aurora_swarm.Response` (raised in strict mode).
        """
        self._check_open()
        endpoint = self._agent(agent_index)
        _check_prompt(prompt, None)
        if max_tokens is not None:
            _check_max_tokens(max_tokens, "max_tokens")
        (budget,) = await self._core.sizer.budgets(
            [prompt], max_tokens, self._core.max_tokens, self._endpoints
        )
        if isinstance(budget, PromptError):
            return self._finish_one(Response.failure(budget, agent_index=agent_index))
        response = await self._chat_with_retry(agent_index, endpoint, prompt, budget)
        return self._finish_one(response)

    def _finish_one(self, response: Response) -> Response:
        if self._core.strict and response.exception is not None:
            raise response.exception
        return response

    async def _chat_with_retry(
        self, agent_index: int, endpoint: Endpoint, prompt: str, budget: int
    ) -> Response:
        core = self._core
        record = core.records[endpoint]
        settings = core.settings
        body = {**core.params, "model": core.model, "max_tokens": budget}
        messages = [{"role": "user", "content": prompt}]
        timeout = settings.timeouts.for_chunk(1)
        attempts = 0

        async def attempt(number: int) -> Response:
            nonlocal attempts
            attempts = number
            counters = record.counters
            counters.requests += 1
            counters.prompts += 1
            if number > 1:
                counters.retries += 1
            try:
                async with core.limiter:
                    choice, usage, latency = await core.transport.chat(
                        endpoint, messages, body, timeout)
            except RequestError as exc:
                counters.failures[exc.cause] += 1
                record.health.record_failure(exc, settings.health, settings.retry)
                raise
            record.health.record_success()
            counters.answered += 1
            counters.latencies.append(latency)
            if usage is not None:
                counters.prompt_tokens += usage.prompt_tokens
                counters.completion_tokens += usage.completion_tokens
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
        self, agent_index: int, prompts: Sequence[str], max_tokens: int | None = None
    ) -> list[Response]:
        """Exactly ONE ``/v1/completions`` request carrying every prompt, to one agent.

        Answers are placed by each choice's ``index``. A missing, duplicated or out-of-range
        index fails exactly the prompts it affects. There is no retry: a failed request fails
        every prompt it carried (:meth:`send_all_batched` retries and moves work instead).
        """
        self._check_open()
        endpoint = self._agent(agent_index)
        prompts = _check_prompts(prompts)
        if max_tokens is not None:
            _check_max_tokens(max_tokens, "max_tokens")
        if not prompts:
            return []
        budgets = await self._core.sizer.budgets(
            prompts, max_tokens, self._core.max_tokens, self._endpoints
        )
        results: list[Response | None] = [None] * len(prompts)
        fit = []
        for index, budget in enumerate(budgets):
            if isinstance(budget, PromptError):
                results[index] = Response.failure(budget, agent_index=agent_index)
            else:
                fit.append(index)
        if fit:
            budget = min(b for b in budgets if isinstance(b, int))
            record = self._core.records[endpoint]
            job = BatchJob(
                [record], [prompts[i] for i in fit], [budget] * len(fit),
                send=self._send_completions, probe=self._probe,
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
        self, prompts: Sequence[str], max_tokens: int | None = None,
        *, on_result: ResultHook | None = None,
    ) -> list[Response]:
        """One chat request per prompt, round-robin over the agents (the non-batched baseline).

        ``out[i]`` answers ``prompts[i]``; prompt ``i`` goes to agent ``i % size``.
        """
        self._check_open()
        prompts = _check_prompts(prompts)
        if max_tokens is not None:
            _check_max_tokens(max_tokens, "max_tokens")
        budgets = await self._core.sizer.budgets(
            prompts, max_tokens, self._core.max_tokens, self._endpoints
        )
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
                        agent, self._endpoints[agent], prompts[index], budget)
                results[index] = response
                if on_result is not None:
                    on_result(index, response)

        workers = min(len(prompts), int(self._core.limiter.total_tokens))
        async with anyio.create_task_group() as group:
            for _ in range(workers):
                group.start_soon(worker)
        return self._finish_many([r for r in results if r is not None])

    async def send_all_batched(
        self, prompts: Sequence[str], max_tokens: int | None = None,
        *, on_result: ResultHook | None = None,
    ) -> list[Response]:
        """Every prompt over every agent, batched; ``out[i]`` answers ``prompts[i]``.

        Prompts are cut into chunks that agents pull as they have room (fast agents take more),
        each chunk ONE ``/v1/completions`` request. Failed chunks move to other agents; a prompt
        that still fails gets a failed :class:`~aurora_swarm.Response` (or, in strict mode, the
        call raises :class:`~aurora_swarm.BatchError`). With ``use_batch=False`` this is
        :meth:`send_all`.

        Parameters
        ----------
        prompts:
            The prompts (strings).
        max_tokens:
            Tokens to generate per prompt; left out, sized from the model's context.
        on_result:
            Called as ``on_result(index, response)`` the moment each prompt is settled.
        """
        if not self._core.use_batch:
            return await self.send_all(prompts, max_tokens, on_result=on_result)
        self._check_open()
        prompts = _check_prompts(prompts)
        if max_tokens is not None:
            _check_max_tokens(max_tokens, "max_tokens")
        if not prompts:
            return []
        budgets = await self._core.sizer.budgets(
            prompts, max_tokens, self._core.max_tokens, self._endpoints
        )
        return await self._dispatch(prompts, budgets, on_result)

    async def _dispatch(
        self, prompts: Sequence[str], budgets: Sequence[int | PromptError],
        on_result: ResultHook | None,
    ) -> list[Response]:
        results: list[Response | None] = [None] * len(prompts)
        fit: list[int] = []
        for index, budget in enumerate(budgets):
            if isinstance(budget, PromptError):
                results[index] = Response.failure(budget)
                if on_result is not None:
                    on_result(index, results[index])  # type: ignore[arg-type]
            else:
                fit.append(index)
        if len(fit) == len(prompts):
            payloads: Sequence[str] = prompts
            fit_budgets = budgets
            hook = on_result
        else:
            payloads = [prompts[i] for i in fit]
            fit_budgets = [budgets[i] for i in fit]
            hook = None if on_result is None else (lambda k, r: on_result(fit[k], r))
        job = BatchJob(
            [self._core.records[e] for e in self._endpoints], payloads,
            fit_budgets,  # type: ignore[arg-type]
            send=self._send_completions, probe=self._probe, settings=self._core.settings,
            limiter=self._core.limiter, on_result=hook,
        )
        answers = await job.run()
        if len(fit) == len(prompts):
            return self._finish_many(answers)
        for k, response in zip(fit, answers, strict=True):
            results[k] = response
        return self._finish_many([r for r in results if r is not None])

    async def _send_completions(
        self, endpoint: Endpoint, prompts: list[str], budget: int, timeout: float | None
    ) -> BatchReply:
        params = {**self._core.params, "model": self._core.model, "max_tokens": budget}
        return await self._core.transport.completions(endpoint, prompts, params, timeout)

    async def _probe(self, endpoint: Endpoint) -> bool:
        return await self._core.transport.health(
            endpoint, self._core.settings.health.probe_timeout)

    def _finish_many(self, responses: list[Response]) -> list[Response]:
        if self._core.strict:
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
        self, prompt: str, max_tokens: int | None = None
    ) -> list[Response]:
        """Send the same prompt to every agent (one chat request each); ``out[k]`` is agent k's."""
        self._check_open()
        _check_prompt(prompt, None)
        results: list[Response | None] = [None] * self.size

        async def one(agent: int) -> None:
            results[agent] = await self._post_unchecked(agent, prompt, max_tokens)

        async with anyio.create_task_group() as group:
            for agent in range(self.size):
                group.start_soon(one, agent)
        return self._finish_many([r for r in results if r is not None])

    async def _post_unchecked(self, agent: int, prompt: str, max_tokens: int | None) -> Response:
        (budget,) = await self._core.sizer.budgets(
            [prompt], max_tokens, self._core.max_tokens, self._endpoints)
        if isinstance(budget, PromptError):
            return Response.failure(budget, agent_index=agent)
        return await self._chat_with_retry(agent, self._endpoints[agent], prompt, budget)


def _check_max_tokens(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")


def _check_prompt(prompt: object, index: int | None) -> None:
    if not isinstance(prompt, str):
        raise PromptError(index, f"must be a str, got {type(prompt).__name__}")


def _check_prompts(prompts: Sequence[str]) -> Sequence[str]:
    if isinstance(prompts, str):
        raise PromptError(None, "prompts must be a list of strings, not one string")
    if not isinstance(prompts, Sequence):
        prompts = list(prompts)
    for index, prompt in enumerate(prompts):
        if type(prompt) is not str:
            _check_prompt(prompt, index)
    return prompts

