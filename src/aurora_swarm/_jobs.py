"""Checkpointed batch jobs: :func:`run_job` sends what a results file does not hold yet.

A job is a list of items (id, prompt, settings), a pool, and a results file. The runner checks
every item first (ids unique, prompts well formed), asks the fleet whether it serves the model,
opens the results file (cutting a torn last line a killed run left), and sends only the items
whose id the file does not hold, in windows, so that memory stays bounded for millions of
prompts. Each settled item becomes one line, appended at once (see :mod:`._job_output`).

The rule for failures: a failed item is written with its error. A rerun retries it (its failed
line is removed first, so each id stays in the file once) unless ``retry_failed=False``.

The rule for changes: every line carries the fingerprint of what determined its answer (see
:mod:`._job_resume`). An item whose fingerprint differs from its result's is not done: by
default the run stops before sending anything (``on_change``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import anyio
import anyio.to_thread
import attrs

from ._config import POOL_DEFAULT, PoolDefault
from ._display import causes, html_table, text_table
from ._exceptions import (
    BatchError,
    ConfigurationError,
    EndpointUnavailable,
    PromptError,
    RequestError,
)
from ._formats import ChatTemplateSetting
from ._job_fleet import BenchWatch, FleetDownError, FleetGate, is_fleet_failure
from ._job_input import ItemId, JobFileError, JobItem, PromptFile, as_items
from ._job_output import JobResult, ResultsFile, ResultWriter, failure_cause
from ._job_resume import ON_CHANGE, ChangedItemsError, Fingerprinter, OnChange, plan_resume
from ._pool import VLLMPool
from ._progress import ProgressBar, check_progress, open_bar
from ._prompts import Prompt
from ._response import Response
from ._stats import PoolStats
from ._tables import table_items
from ._transport import proxy_note

__all__ = ["JobProgress", "JobSummary", "run_job", "run_job_sync"]

_log = logging.getLogger("aurora_swarm.jobs")

_RATE_WINDOW = 30.0  # seconds of history behind the rate (and so the ETA)
_BENCH_LOOK = 0.25  # seconds between looks for benched endpoints
_STUCK = 5.0  # seconds every endpoint may be down while a call still waits, before it is called off


@attrs.frozen
class JobProgress:
    """Where a running job stands; handed to the ``progress`` callback of :func:`run_job`.

    .. versionadded:: 0.1.0

    Attributes
    ----------
    total:
        Items in the input.
    skipped:
        Items the results file held already (done by an earlier run).
    done:
        Items settled by this run (answered or failed).
    failed:
        Of those, items that failed.
    elapsed:
        Seconds since this run started sending.
    rate:
        Items settled per second, over the last half minute (``None`` before the first).
    stats:
        The pool's counters for this run so far.
    paused:
        Seconds the run has been paused because every endpoint is down (``None`` while it
        sends).

        .. versionadded:: 0.1.0
    """

    total: int
    skipped: int
    done: int
    failed: int
    elapsed: float
    rate: float | None
    stats: PoolStats
    paused: float | None = None

    @property
    def remaining(self) -> int:
        """Items still to settle in this run."""
        return max(0, self.total - self.skipped - self.done)

    @property
    def eta(self) -> float | None:
        """Seconds until every item has settled, at the current rate (``None`` if unknown)."""
        if not self.remaining:
            return 0.0
        return self.remaining / self.rate if self.rate else None


@attrs.frozen
class JobSummary:
    """What a run of :func:`run_job` did.

    .. versionadded:: 0.1.0

    Attributes
    ----------
    output:
        The results file.
    total:
        Items in the input.
    skipped:
        Items done by earlier runs, not sent again.
    answered:
        Items answered by this run.
    failed:
        Items that failed in this run (written with their error).
    failures:
        This run's failed items, counted by cause (``"HTTP 503"``, ``"RequestTimeout"``, ...).
    failures_by_endpoint:
        This run's failed items, counted by the endpoint that last tried them (``host:port``;
        ``"none"`` when no endpoint was left to try).
    benched:
        Endpoints benched during this run (``host:port`` to the cause of their last failure).
    pauses:
        Times this run paused because every endpoint was down.
    paused:
        Seconds this run spent paused.
    unsent:
        Items this run left unsent (the fleet stayed down; see :class:`FleetDownError`).
    stats:
        The pool's counters for this run: requests, failed requests by cause (each retried
        or moved, so most do not fail an item), tokens, latency.
    elapsed:
        Seconds this run took, from the first request to the last line written.
    retried_failures:
        Failed records of earlier runs removed from the file, so their items ran again.
    kept_failures:
        Failed records of earlier runs kept (``retry_failed=False``).
    torn_bytes:
        Bytes of a torn last line (left by a killed run) cut off the results file.
    changed:
        Items whose result was written for another prompt or settings (sent again with
        ``on_change="rerun"``, kept with ``"keep"``).
    gone:
        Ids in the results file that the input no longer holds (left as they are).
    unchecked:
        Items counted as done from result lines without a fingerprint (written by an older
        version), so not checked against the item's prompt and settings.
    on_change:
        What this run did with changed items.
    """

    output: str
    total: int
    skipped: int
    answered: int
    failed: int
    failures: Mapping[str, int]
    stats: PoolStats
    elapsed: float
    retried_failures: int = 0
    kept_failures: int = 0
    torn_bytes: int = 0
    changed: int = 0
    gone: int = 0
    unchecked: int = 0
    on_change: OnChange = "stop"
    failures_by_endpoint: Mapping[str, int] = attrs.field(factory=dict)
    benched: Mapping[str, str] = attrs.field(factory=dict)
    pauses: int = 0
    paused: float = 0.0
    unsent: int = 0

    @property
    def sent(self) -> int:
        """Items this run settled (answered or failed)."""
        return self.answered + self.failed

    @property
    def rate(self) -> float:
        """Items answered per second in this run (failures do not count)."""
        return self.answered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Whether the results file now holds an answer for every item (no failure left)."""
        return self.failed == 0 and self.kept_failures == 0 and self.unsent == 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): every field, ``sent``, ``rate``, ``complete``, and the
        pool's counters as :meth:`PoolStats.to_dict <aurora_swarm.PoolStats.to_dict>`."""
        data = attrs.asdict(self, recurse=False)
        data.update(failures=dict(self.failures), stats=self.stats.to_dict(), sent=self.sent,
                    rate=self.rate, complete=self.complete)
        return data

    def _rows(self) -> list[tuple[str, str]]:
        stats = self.stats
        troubled = [e for e in stats.endpoints if e.failures]
        rows = [
            ("items", f"{self.total:,}: {self.skipped:,} done before, {self.sent:,} sent now"),
            ("answered", f"{self.answered:,} in {self.elapsed:.1f} s ({self.rate:,.0f}/s)"),
            ("failed", f"{self.failed:,}" + (f" ({causes(self.failures)})"
                                             if self.failures else "")),
            ("requests", f"{stats.requests:,}, {stats.retries:,} prompts retried"),
            ("tokens", f"{stats.tokens:,}"),
        ]
        if troubled:
            named = ", ".join(f"{e.endpoint} ({causes(e.failures)})" for e in troubled[:5])
            more = f" and {len(troubled) - 5} more" if len(troubled) > 5 else ""
            rows.append(("failing endpoints", named + more))
        if self.benched:
            rows.append(("benched", ", ".join(list(self.benched)[:5])
                         + (f" and {len(self.benched) - 5} more" if len(self.benched) > 5
                            else "")))
        left = f"{self.unsent:,} left unsent (the fleet is down)" if self.unsent else ""
        failed = (f"{self.failed + self.kept_failures:,} items failed"
                  if self.failed + self.kept_failures else "")
        rows.append(("results", f"{self.output}: " + ("complete" if self.complete else
                     "; ".join(x for x in (failed, left) if x))))
        return rows

    def __str__(self) -> str:
        return text_table(("job", ""), self._rows())

    def _repr_html_(self) -> str:
        return html_table(("job", ""), self._rows(), "JobSummary")


async def run_job(
    pool: VLLMPool,
    items: PromptFile | Iterable[JobItem | Prompt | Mapping[str, Any]],
    output: str | os.PathLike[str],
    *,
    max_tokens: int | None = None,
    chat_template: ChatTemplateSetting | PoolDefault = POOL_DEFAULT,
    system_prompt: str | PoolDefault | None = POOL_DEFAULT,
    retry_failed: bool = True,
    window: int = 20_000,
    sync_interval: float | None = 1.0,
    progress: Callable[[JobProgress], object] | bool | Mapping[str, Any] | None = None,
    progress_interval: float = 1.0,
    check_model: bool = True,
    on_change: OnChange = "stop",
    fleet_wait: float = 300.0,
) -> JobSummary:
    """Send every item the results file ``output`` does not hold yet; append each result.

    Rerunning the same job after a crash, even ``kill -9``, sends only what is missing: the
    results file is the checkpoint. Each settled item is one JSON line (see
    :class:`JobResult`), written as soon as its batch settles; lines appear in the order
    items settle, each naming its ``id`` and input ``index`` (:func:`read_results` sorts
    them back).

    .. versionadded:: 0.1.0

    Parameters
    ----------
    pool:
        The pool that sends (any sub-pool).
    items:
        A :class:`PromptFile`, or :class:`JobItem` objects, prompts (the id is the position)
        or mappings with the keys of a JSONL prompts line. Tables too, read lazily: a pandas
        Series of prompts (the ids are its index labels), a Hugging Face ``Dataset`` column
        (``ds["prompt"]``), or a DataFrame or ``Dataset`` whose columns are JSONL keys. Read
        twice: once to check, once to send (a one-shot iterator is read into a list first).
    output:
        The results file (JSON lines); created if missing, appended to otherwise.
    max_tokens:
        Tokens to generate per item (an item's own ``max_tokens`` wins); ``None`` sizes them
        from the model's context, capped by the pool's ``max_tokens``.
    chat_template, system_prompt:
        As for :meth:`VLLMPool.send_all_batched <aurora_swarm.VLLMPool.send_all_batched>` (an
        item's own ``system_prompt`` wins).
    retry_failed:
        Whether items that failed in an earlier run are sent again (their failed lines are
        removed first) or count as done.
    window:
        Items per batched call. Two windows run at once, so the next keeps the fleet busy
        while the last of the previous one finishes; memory stays bounded by two windows.
    sync_interval:
        Seconds between ``fsync`` calls on the results file (``0``: after every write,
        ``None``: never). Each burst of results is written at once either way, so a killed
        process loses nothing written; ``fsync`` guards against a crash of the machine.
    progress:
        Called with a :class:`JobProgress` every ``progress_interval`` seconds and at the end;
        or ``True`` (or a mapping of ``tqdm`` options) for a progress bar drawn by
        ``tqdm.auto`` (a widget in Jupyter) that starts at the items done before.
    progress_interval:
        Seconds between ``progress`` calls.
    check_model:
        Ask ``/v1/models`` first and fail at once when the fleet is unreachable or does not
        serve the pool's model.
    on_change:
        What to do with items whose result in ``output`` was written for another prompt or
        other settings (model, max tokens, sampling, chat template, system prompt; compared
        by the fingerprint each line carries): ``"stop"`` raises
        :class:`ChangedItemsError` before anything is sent; ``"rerun"`` sends them again
        (the new line is appended and wins when read, see :func:`read_results`); ``"keep"``
        keeps the old results.

        .. versionadded:: 0.1.0
    fleet_wait:
        Seconds to wait when every endpoint is down. The job then stops sending, probes
        ``/health`` every second and resumes when any endpoint answers; prompts the down
        fleet could not answer are sent again, not written as failures. Once a pause has
        lasted ``fleet_wait`` seconds the job ends with :class:`FleetDownError` and what is
        left is not written (a rerun sends it). ``0``: no pause; what the down fleet could not
        answer is written as failed.

        .. versionadded:: 0.1.0

    Returns
    -------
    JobSummary
        What this run did.

    Raises
    ------
    JobFileError
        An item is malformed or repeats an id (naming its line), or the results file is not
        one (naming the line) or is locked by another run.
    ChangedItemsError
        With ``on_change="stop"``: some results answer changed prompts or settings (a
        :class:`JobFileError`; the message says how many and how to proceed).
    FleetDownError
        Every endpoint stayed down for ``fleet_wait`` seconds (an
        :class:`~aurora_swarm.EndpointUnavailable` carrying the counts and the summary so
        far; every settled result is written).
    ConfigurationError
        The fleet does not serve the model (the message lists what it serves).
    EndpointUnavailable
        No endpoint answered ``/v1/models``.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigurationError(f"window must be a positive int, got {window!r}")
    if sync_interval is not None and sync_interval < 0:
        raise ConfigurationError(f"sync_interval must be >= 0 or None, got {sync_interval!r}")
    if not callable(progress):
        check_progress(progress)
    if on_change not in ON_CHANGE:
        raise ConfigurationError(f"on_change must be one of {ON_CHANGE}, got {on_change!r}")
    if isinstance(fleet_wait, bool) or not isinstance(fleet_wait, int | float) or not (
            fleet_wait >= 0):
        raise ConfigurationError(f"fleet_wait must be seconds >= 0, got {fleet_wait!r}")
    runner = _Runner(pool, table_items(items) or as_items(items), os.fspath(output), window,
                     max_tokens, chat_template, system_prompt, fleet_wait)
    fingerprints, total = await anyio.to_thread.run_sync(runner.check_items)
    if check_model:
        await check_fleet(pool)
    results = await anyio.to_thread.run_sync(
        lambda: ResultsFile.open(runner.output, retry_failed=retry_failed))
    try:
        plan = await anyio.to_thread.run_sync(plan_resume, results.records, fingerprints,
                                              on_change)
        del fingerprints
        results.records.clear()
        if plan.changed and on_change == "stop":
            raise ChangedItemsError(runner.output, plan.changed, plan.changed_examples,
                                    plan.gone)
        skipped = len(plan.done)
        log_start(runner.output, total, skipped, pool.size)
        if not callable(progress):
            runner.bar = open_bar(progress, total, "job", initial=skipped,
                                  retries=lambda: pool.stats().retries)
            progress = None
        summary = await runner.run(results, total, plan.done, sync_interval, progress,
                                   progress_interval)
        summary = attrs.evolve(summary, kept_failures=plan.kept_failures,
                               changed=plan.changed, gone=plan.gone, unchecked=plan.unchecked,
                               on_change=on_change)
        if summary.unsent:
            raise FleetDownError(summary.sent, summary.unsent, runner.gate.waited, summary)
        return summary
    finally:
        results.close()
        if runner.bar is not None:
            runner.bar.close()


def run_job_sync(
    endpoints: Iterable[Any] | str | os.PathLike[str],
    model: str,
    items: PromptFile | Iterable[JobItem | Prompt | Mapping[str, Any]],
    output: str | os.PathLike[str],
    *,
    pool_options: Mapping[str, Any] | None = None,
    **job_options: Any,
) -> JobSummary:
    """:func:`run_job` from synchronous code: make a pool, run the job, close the pool.

    Inside a running event loop (a Jupyter notebook) it raises
    :class:`~aurora_swarm.ConfigurationError`: ``await run_job(...)`` is the call there.

    .. versionadded:: 0.1.0

    Parameters
    ----------
    endpoints:
        A hostfile path, or what :class:`~aurora_swarm.VLLMPool` accepts.
    model:
        The served model name.
    items, output:
        As for :func:`run_job`.
    pool_options:
        More keyword arguments for :class:`~aurora_swarm.VLLMPool`.
    **job_options:
        Keyword arguments of :func:`run_job`.

    Examples
    --------
    A script calls it at top level, with the fleet's hostfile. Here the fleet is a
    :class:`~aurora_swarm.testing.FakeFleet` serving in this thread's event loop, so the job
    runs in a worker thread:

    >>> import anyio, anyio.to_thread, tempfile
    >>> from pathlib import Path
    >>> from aurora_swarm.jobs import run_job_sync
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo(folder):
    ...     async with FakeFleet(2) as fleet:
    ...         hostfile = fleet.write_hostfile(Path(folder, "agents.hostfile"))
    ...         return await anyio.to_thread.run_sync(
    ...             run_job_sync, hostfile, fleet.model, ["2 + 2?", "A prime?"],
    ...             Path(folder, "results.jsonl"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     summary = anyio.run(demo, folder)
    >>> summary.answered, summary.complete
    (2, True)
    """
    from ._hostfile import parse_hostfile

    _refuse_running_loop("run_job_sync", "await run_job(pool, items, output)")
    if isinstance(endpoints, str | os.PathLike):
        endpoints = parse_hostfile(endpoints)

    async def main() -> JobSummary:
        async with VLLMPool(endpoints, model, **dict(pool_options or {})) as pool:
            return await run_job(pool, items, output, **job_options)

    return anyio.run(main)


def log_start(output: str, total: int, skipped: int, endpoints: int) -> None:
    """Log a run's first line: ``starting`` or ``resuming`` (marked ``event="start"``)."""
    if skipped:
        _log.info("resuming %s: %d of %d done, %d to send over %d endpoints", output, skipped,
                  total, total - skipped, endpoints, extra={"event": "start"})
    else:
        _log.info("starting %s: %d to send over %d endpoints", output, total, endpoints,
                  extra={"event": "start"})


def _refuse_running_loop(name: str, instead: str) -> None:
    """A synchronous entry point cannot start an event loop inside a running one (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise ConfigurationError(
        f"{name}() cannot run inside a running event loop (a Jupyter notebook has one); "
        f"use `{instead}` there instead")


async def check_fleet(pool: VLLMPool) -> None:
    """Fail at once if no endpoint answers ``/v1/models`` or the model is not served.

    .. versionadded:: 0.1.0

    Raises
    ------
    ConfigurationError
        The fleet does not serve the pool's model (the message lists what it serves).
    EndpointUnavailable
        None of the first 8 endpoints answered ``/v1/models``.
    """
    if await pool.model_info() is not None:
        return
    reason = "no answer"
    try:
        # Asked again only to say why: the pool's own transport, with its key and pools.
        await pool._core.transport.models(pool.endpoints[0], timeout=5.0)
    except RequestError as exc:
        reason = str(exc)
    tried = min(8, pool.size)  # what model_info asks
    which = f"its {tried}" if tried == pool.size else f"the first {tried} of its {pool.size}"
    hint = "Is it up? `aurora-swarm wait` waits for a fleet that is starting"
    proxy = pool._core.transport.proxy_for(pool.endpoints[0])
    if proxy is not None and "proxy" not in reason:
        hint = "Is it up?" + proxy_note(proxy)
    raise EndpointUnavailable(
        f"the fleet is unreachable: none of {which} endpoints answered /v1/models ({reason}). "
        + hint)


class _Runner:
    """One run of a job (internal)."""

    def __init__(
        self, pool: VLLMPool, items: Iterable[JobItem], output: str, window: int,
        max_tokens: int | None, chat_template: ChatTemplateSetting | PoolDefault,
        system_prompt: str | PoolDefault | None, fleet_wait: float,
    ) -> None:
        self.pool = pool
        self.items = items
        self.output = output
        self.window = window
        self.max_tokens = max_tokens
        self.chat_template = chat_template
        self.system_prompt = system_prompt
        self.fingerprint = Fingerprinter(pool, max_tokens, chat_template, system_prompt)
        self.done = 0
        self.failed = 0
        self.failures: Counter[str] = Counter()
        self.failed_at: Counter[str] = Counter()
        self.gate = FleetGate(pool, fleet_wait)
        self.benches = BenchWatch(pool)
        self.calls: set[anyio.CancelScope] = set()
        self._down_since: float | None = None
        self.error: BaseException | None = None
        self.writer: ResultWriter | None = None
        self.scope: anyio.CancelScope | None = None
        self.bar: ProgressBar | None = None

    def check_items(self) -> tuple[dict[ItemId, str], int]:
        """Read every item once: lines well formed, ids unique. Returns (fingerprints by id,
        count)."""
        fingerprints: dict[ItemId, str] = {}
        for item in self.items:
            if item.id in fingerprints:
                raise self._duplicate(item)
            fingerprints[item.id] = self.fingerprint(item)
        if not fingerprints and isinstance(self.items, PromptFile):
            raise JobFileError(self.items.path, None, "holds no prompts (only blank lines)")
        return fingerprints, len(fingerprints)

    def _duplicate(self, item: JobItem) -> JobFileError:
        first = next(i for i in self.items if i.id == item.id)  # the error path reads again
        if isinstance(self.items, PromptFile):
            return JobFileError(self.items.path, item.line,
                                f"id {item.id!r} is used already on line {first.line}")
        return JobFileError(f"items[{item.index}]", None,
                            f"id {item.id!r} is used already by items[{first.index}]")

    async def run(
        self, results: ResultsFile, total: int, done: set[ItemId], sync_interval: float | None,
        progress: Callable[[JobProgress], object] | None, progress_interval: float,
    ) -> JobSummary:
        skipped = len(done)
        writer = self.writer = ResultWriter(results, sync_interval)
        before = self.pool.stats()
        start = time.monotonic()
        ticker = _Ticker(self, total, skipped, before, start, progress)
        async with anyio.create_task_group() as group:
            self.scope = group.cancel_scope
            group.start_soon(self._guard, writer.run)
            group.start_soon(ticker.run, progress_interval if progress is not None else None)
            await self._guard(self._send_windows, done)
            writer.close()
            ticker.stop()
        ticker.tick()
        self.benches.look()
        if self.error is not None:
            if isinstance(self.error, OSError):
                raise JobFileError(self.output, None,
                                   f"cannot be written: {self.error}") from self.error
            raise self.error
        summary = JobSummary(
            self.output, total, skipped, self.done - self.failed, self.failed,
            dict(self.failures), self.pool.stats() - before, time.monotonic() - start,
            results.dropped_failures, 0, results.torn_bytes,
            failures_by_endpoint=dict(self.failed_at),
            benched={str(e): cause for e, cause in self.benches.benched.items()},
            pauses=self.gate.pauses, paused=self.gate.paused_seconds,
            unsent=total - skipped - self.done if self.gate.gave_up else 0,
        )
        _log.info("done %s: %d answered, %d failed%s in %.1f s; %d requests, "
                  "%d prompts retried", self.output, summary.answered, summary.failed,
                  f" ({dict(self.failures)})" if self.failures else "", summary.elapsed,
                  summary.stats.requests, summary.stats.retries, extra={"event": "done"})
        return summary

    async def _guard(self, work: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run ``work``; its first error is kept (unwrapped) for the caller and stops the job."""
        try:
            await work(*args)
        except Exception as exc:
            if self.error is None:
                self.error = exc
            assert self.scope is not None
            self.scope.cancel()

    async def _send_windows(self, done: set[ItemId]) -> None:
        todo = (item for item in self.items if item.id not in done)
        slots = anyio.Semaphore(2)
        async with anyio.create_task_group() as windows:
            while True:
                await slots.acquire()
                if self.gate.gave_up:
                    break  # the fleet stayed down: what is left stays unsent
                batch = await anyio.to_thread.run_sync(_take, todo, self.window)
                if not batch:
                    break
                windows.start_soon(self._window, batch, slots)

    async def _window(self, batch: list[JobItem], slots: anyio.Semaphore) -> None:
        groups: dict[tuple[int | None, str | None], list[JobItem]] = {}
        for item in batch:
            groups.setdefault(item.group, []).append(item)
        try:
            async with anyio.create_task_group() as group:
                for members in groups.values():
                    group.start_soon(self._guard, self._send, members)
        finally:
            slots.release()

    async def _send(self, items: list[JobItem]) -> None:
        """Send items of one group; while the whole fleet is down, hold and send again."""
        while items and not self.gate.gave_up:
            pauses = self.gate.pauses
            held = await self._call(items)
            if not held or not await self.gate.fleet_is_back():
                return  # all settled, or the fleet stayed down: the held stay unsent
            paused = self.gate.pauses > pauses
            items = []
            for item, response in held:
                # Retryable failures are the prompt's own unless the fleet was found down.
                if paused or response is None or isinstance(response.exception,
                                                            EndpointUnavailable):
                    items.append(item)
                else:
                    self._settle(item, response, self.fingerprint(item))

    def watch_fleet(self, all_down: bool) -> None:
        """Call off this job's calls when every endpoint has been down for a while and they
        still wait (on requests a vanished server never answers): their unsettled items are
        held for the pause like those the pool fails at once."""
        now = time.monotonic()
        if not (all_down and self.calls and self.gate.enabled):
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
        elif now - self._down_since >= _STUCK:
            for scope in self.calls:
                scope.cancel()
            self._down_since = None

    async def _call(self, items: list[JobItem]) -> list[tuple[JobItem, Response | None]]:
        """One batched call; returns the failures a down fleet may explain (held back when
        the job pauses for a down fleet, written otherwise), and the items of a call the
        fleet watch called off (with no response)."""
        first = items[0]
        max_tokens = first.max_tokens if first.max_tokens is not None else self.max_tokens
        system = first.system_prompt if first.system_prompt is not None else self.system_prompt
        fingerprints = [self.fingerprint(item) for item in items]
        held: list[tuple[JobItem, Response | None]] = []
        settled = [False] * len(items)

        def on_result(k: int, response: Response) -> None:
            settled[k] = True
            if self.gate.enabled and not response.success and is_fleet_failure(
                    response.exception):
                held.append((items[k], response))
            else:
                self._settle(items[k], response, fingerprints[k])

        scope = anyio.CancelScope()
        self.calls.add(scope)
        try:
            with scope:
                await self.pool.send_all_batched(
                    [item.prompt for item in items], max_tokens,
                    chat_template=self.chat_template, system_prompt=system,
                    on_result=on_result)
        except BatchError:
            pass  # a strict pool: every failure has been recorded through on_result
        except PromptError as exc:
            if exc.index is None or not 0 <= exc.index < len(items):
                raise
            item = items[exc.index]
            where = (JobFileError(self.items.path, item.line, f"id {item.id!r}: {exc.problem}")
                     if isinstance(self.items, PromptFile)
                     else JobFileError(f"items[{item.index}]", None, exc.problem))
            raise where from exc
        finally:
            self.calls.discard(scope)
        if scope.cancelled_caught:
            held += [(items[k], None) for k, done in enumerate(settled) if not done]
        return held

    def _settle(self, item: JobItem, response: Response, fingerprint: str) -> None:
        assert self.writer is not None
        self.writer.add(JobResult.from_response(item, response, fingerprint).line())
        if self.bar is not None:
            self.bar(item.index, response)
        self.done += 1
        if not response.success:
            self.failed += 1
            self.failures[failure_cause(response.exception) or "unknown"] += 1
            self.failed_at[str(response.endpoint) if response.endpoint else "none"] += 1


def _take(items: Iterator[JobItem], count: int) -> list[JobItem]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == count:
            break
    return batch


class _Ticker:
    """Calls the progress callback now and then, with a rate over the recent past."""

    def __init__(self, runner: _Runner, total: int, skipped: int, before: PoolStats,
                 start: float, callback: Callable[[JobProgress], object] | None) -> None:
        self._runner = runner
        self._total = total
        self._skipped = skipped
        self._before = before
        self._start = start
        self._callback = callback
        self._history: deque[tuple[float, int]] = deque([(start, 0)])
        self._scope = anyio.CancelScope()

    async def run(self, interval: float | None) -> None:
        """Tick every ``interval`` seconds (never with ``None``); note benched endpoints."""
        next_tick = time.monotonic() + (interval if interval is not None else math.inf)
        with self._scope:
            while True:
                await anyio.sleep(min(_BENCH_LOOK, max(0.0, next_tick - time.monotonic())))
                self._look()
                if time.monotonic() >= next_tick:
                    assert interval is not None
                    next_tick += interval
                    self.tick()

    def stop(self) -> None:
        self._scope.cancel()

    def _look(self) -> None:
        """Note benched endpoints; call off calls stuck on a fleet that is all down (a runner
        without a fleet watch, such as an OpenAI batch file's, has nothing to do here)."""
        runner = self._runner
        if isinstance(runner, _Runner):
            runner.watch_fleet(runner.benches.look())

    def _paused(self, now: float) -> float | None:
        gate = getattr(self._runner, "gate", None)
        since = gate.paused_since if isinstance(gate, FleetGate) else None
        return None if since is None else now - since

    def tick(self) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        done = self._runner.done
        history = self._history
        history.append((now, done))
        while len(history) > 2 and now - history[1][0] >= _RATE_WINDOW:
            history.popleft()
        then, done_then = history[0]
        rate = (done - done_then) / (now - then) if now > then and done > done_then else None
        self._callback(JobProgress(
            self._total, self._skipped, done, self._runner.failed, now - self._start, rate,
            self._runner.pool.stats() - self._before, self._paused(now)))
