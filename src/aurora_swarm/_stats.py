"""Counters a pool keeps per endpoint, and the snapshots :meth:`VLLMPool.stats` returns.

Counters are updated once per request (never per prompt) and may be read at any time, also
while a call runs, which is what progress displays do.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._capabilities import Capabilities
from ._display import causes, html_table, seconds, text_table
from ._endpoint import Endpoint
from ._response import Usage
from ._server_model import ServerModel

__all__ = ["EndpointStats", "PoolStats"]

_SHOWN_ENDPOINTS = 20  # rows a printed PoolStats shows; to_dict() has them all
_HEADERS = ("endpoint", "requests", "prompts", "answered", "retries", "failed requests",
            "tokens", "p50", "p95")


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of already sorted values, nearest-rank; None if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@attrs.define
class Counters:
    """Mutable per-endpoint counters (internal; read through :class:`EndpointStats`)."""

    requests: int = 0
    batch_requests: int = 0
    prompts: int = 0
    answered: int = 0
    retries: int = 0
    backups: int = 0
    taken_back: int = 0
    failures: Counter[str] = attrs.field(factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list[float] = attrs.field(factory=list)

    def sent(self, prompts: int, *, batch: bool = False, retry: bool = False,
             backup: bool = False) -> None:
        """Count a request carrying ``prompts`` prompts (a retry or a backup of earlier work)."""
        self.requests += 1
        self.prompts += prompts
        if batch:
            self.batch_requests += 1
        if retry:
            self.retries += 1
        if backup:
            self.backups += 1

    def failed(self, cause: str, prompts: int = 1) -> None:
        """Count ``prompts`` prompts that failed with ``cause`` (see ``RequestError.cause``)."""
        self.failures[cause] += prompts

    def answered_request(self, prompts: int, latency: float, usage: Usage | None) -> None:
        """Count a request that answered ``prompts`` prompts in ``latency`` seconds."""
        self.answered += prompts
        self.latencies.append(latency)
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens

    def took_back(self) -> None:
        """Count a waiting request called off to spread its prompts again."""
        self.taken_back += 1

    def snapshot(
        self, endpoint: Endpoint, server: ServerModel | None = None,
        capabilities: Capabilities | None = None,
    ) -> EndpointStats:
        ordered = sorted(self.latencies)
        server = server or ServerModel()
        return EndpointStats(
            endpoint=endpoint,
            requests=self.requests,
            batch_requests=self.batch_requests,
            prompts=self.prompts,
            answered=self.answered,
            retries=self.retries,
            backups=self.backups,
            failures=dict(self.failures),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_p50=percentile(ordered, 50),
            latency_p95=percentile(ordered, 95),
            latency_p99=percentile(ordered, 99),
            taken_back=self.taken_back,
            slots=server.slots,
            slots_source=server.slots_source,
            wave=server.wave,
            capabilities=capabilities,
        )


@attrs.frozen
class EndpointStats:
    """What one endpoint did, as seen by the pool.

    Attributes
    ----------
    endpoint:
        The endpoint.
    requests:
        HTTP inference requests sent to it (each batched request counts once).
    batch_requests:
        Of those, batched ``/v1/completions`` or batch-chat requests.
    prompts:
        Prompts carried by those requests (a retried prompt counts again).
    answered:
        Prompts it answered successfully.
    retries:
        Prompts it carried that had been tried before and failed.
    backups:
        Backup requests it sent: copies of a straggler's chunk (the first answer wins and the
        other request is called off, so a backup may end before the server saw it).
    failures:
        Failed requests, counted by cause (``"HTTP 503"``, ``"ConnectError"``, ...), plus
        prompts left unanswered inside otherwise good answers (``"BadResponseError"``).
    prompt_tokens, completion_tokens:
        Tokens the server reported.
    latency_p50, latency_p95, latency_p99:
        Request latency percentiles in seconds (``None`` before the first answer).
    taken_back:
        Requests called off while they still waited in the server's queue, their prompts given
        to endpoints that would finish them sooner.
    slots:
        Sequences the server runs at once, as the pool knows it (``None`` while unknown).
    slots_source:
        Where ``slots`` came from: ``"metrics"`` (vLLM's ``/metrics`` while requests waited),
        ``"option"`` (``max_num_seqs`` on the pool or the hostfile), ``"past"`` (how many the
        server ran at once before the pool used it, where its sequences mostly queued), or
        ``"observed"`` (the most seen running at once, a lower bound) or ``None``.
    wave:
        Seconds a prompt holds a slot there, as measured (``None`` before it is).
    capabilities:
        What the endpoint has shown it can do (see
        :meth:`VLLMPool.capabilities <aurora_swarm.VLLMPool.capabilities>`), when known to
        whoever made this snapshot.
    """

    endpoint: Endpoint
    requests: int
    batch_requests: int
    prompts: int
    answered: int
    retries: int
    backups: int
    failures: Mapping[str, int]
    prompt_tokens: int
    completion_tokens: int
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    taken_back: int = 0
    slots: int | None = None
    slots_source: str | None = None
    wave: float | None = None
    capabilities: Capabilities | None = None

    @property
    def single_requests(self) -> int:
        """Requests that carried one prompt outside a batch (chat, or one prompt a request)."""
        return self.requests - self.batch_requests

    def _row(self, name: str | None = None) -> tuple[object, ...]:
        return (name or str(self.endpoint), self.requests, self.prompts, self.answered,
                self.retries, causes(self.failures), self.prompt_tokens + self.completion_tokens,
                seconds(self.latency_p50), seconds(self.latency_p95))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): the endpoint as its URL, every counter, the percentiles."""
        data = attrs.asdict(self, recurse=False)
        data["endpoint"] = self.endpoint.url
        data["failures"] = dict(self.failures)
        if self.capabilities is not None:
            data["capabilities"] = attrs.asdict(self.capabilities)
        return data

    def __str__(self) -> str:
        return text_table(_HEADERS, [self._row()])

    def _repr_html_(self) -> str:
        return html_table(_HEADERS, [self._row()])


@attrs.frozen
class PoolStats:
    """Pool-wide totals and the per-endpoint detail.

    Attributes
    ----------
    endpoints:
        One :class:`EndpointStats` per endpoint of the pool, in pool order.
    latency_p50, latency_p95, latency_p99:
        Request latency percentiles over all endpoints, in seconds (``None`` before the first
        answer).
    """

    endpoints: tuple[EndpointStats, ...]
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None

    @classmethod
    def collect(
        cls, items: Iterable[tuple[Endpoint, Counters]],
        servers: Mapping[Endpoint, ServerModel] | None = None,
        capabilities: Mapping[Endpoint, Capabilities] | None = None,
    ) -> PoolStats:
        """Build a snapshot from live counters (and what the pool knows of each server)."""
        pairs = list(items)
        ordered = sorted(x for _, c in pairs for x in c.latencies)
        servers = servers or {}
        known = capabilities or {}
        return cls(
            tuple(c.snapshot(e, servers.get(e), known.get(e)) for e, c in pairs),
            percentile(ordered, 50),
            percentile(ordered, 95),
            percentile(ordered, 99),
        )

    @property
    def requests(self) -> int:
        """HTTP inference requests sent."""
        return sum(e.requests for e in self.endpoints)

    @property
    def batch_requests(self) -> int:
        """Batched requests sent."""
        return sum(e.batch_requests for e in self.endpoints)

    @property
    def prompts(self) -> int:
        """Prompts carried by requests (retries count again)."""
        return sum(e.prompts for e in self.endpoints)

    @property
    def answered(self) -> int:
        """Prompts answered successfully."""
        return sum(e.answered for e in self.endpoints)

    @property
    def single_requests(self) -> int:
        """Requests that carried one prompt outside a batch."""
        return self.requests - self.batch_requests

    @property
    def retries(self) -> int:
        """Prompts sent again after a failure."""
        return sum(e.retries for e in self.endpoints)

    @property
    def backups(self) -> int:
        """Backup requests sent for stragglers."""
        return sum(e.backups for e in self.endpoints)

    @property
    def taken_back(self) -> int:
        """Requests taken back from a server's queue and given to others."""
        return sum(e.taken_back for e in self.endpoints)

    @property
    def failures(self) -> dict[str, int]:
        """Failures by cause, summed over endpoints."""
        total: Counter[str] = Counter()
        for e in self.endpoints:
            total.update(e.failures)
        return dict(total)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens the servers reported."""
        return sum(e.prompt_tokens for e in self.endpoints)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens the servers reported."""
        return sum(e.completion_tokens for e in self.endpoints)

    @property
    def tokens(self) -> int:
        """All tokens the servers reported."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): the pool's totals and one dict per endpoint."""
        return {
            "requests": self.requests, "batch_requests": self.batch_requests,
            "prompts": self.prompts, "answered": self.answered, "retries": self.retries,
            "backups": self.backups, "failures": self.failures,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "latency_p50": self.latency_p50, "latency_p95": self.latency_p95,
            "latency_p99": self.latency_p99,
            "endpoints": [e.to_dict() for e in self.endpoints],
        }

    def _table(self) -> tuple[list[tuple[object, ...]], str]:
        # Endpoints with failed requests first: they are what a reader looks for.
        ordered = sorted(self.endpoints, key=lambda e: not e.failures)
        rows = [e._row() for e in ordered[:_SHOWN_ENDPOINTS]]
        total = EndpointStats(
            Endpoint("all", 1), self.requests, self.batch_requests, self.prompts,
            self.answered, self.retries, self.backups, self.failures, self.prompt_tokens,
            self.completion_tokens, self.latency_p50, self.latency_p95, self.latency_p99)
        rows.append(total._row(f"all {len(self.endpoints)}"))
        hidden = len(self.endpoints) - _SHOWN_ENDPOINTS
        note = (f"({hidden} more endpoints; to_dict() lists all)"
                if hidden > 0 else "")
        return rows, note

    def __str__(self) -> str:
        rows, note = self._table()
        return text_table(_HEADERS, rows, note)

    def _repr_html_(self) -> str:
        rows, note = self._table()
        return html_table(_HEADERS, rows, "PoolStats", note)

    def __sub__(self, earlier: PoolStats) -> PoolStats:
        """Counts since ``earlier`` (a snapshot of the same pool); percentiles are this one's."""
        before = {e.endpoint: e for e in earlier.endpoints}
        rows = []
        for now in self.endpoints:
            old = before.get(now.endpoint)
            if old is None:
                rows.append(now)
                continue
            failures = Counter(now.failures)
            failures.subtract(old.failures)
            rows.append(attrs.evolve(
                now,
                requests=now.requests - old.requests,
                batch_requests=now.batch_requests - old.batch_requests,
                prompts=now.prompts - old.prompts,
                answered=now.answered - old.answered,
                retries=now.retries - old.retries,
                backups=now.backups - old.backups,
                taken_back=now.taken_back - old.taken_back,
                failures={k: v for k, v in failures.items() if v},
                prompt_tokens=now.prompt_tokens - old.prompt_tokens,
                completion_tokens=now.completion_tokens - old.completion_tokens,
            ))
        return attrs.evolve(self, endpoints=tuple(rows))
