"""One measured call: wall time, HTTP requests, per-prompt latency, client CPU.

A run builds a fresh :class:`~aurora_swarm.VLLMPool` (a script's or notebook's first call, with
its connection set-up), calls ``send_all_batched`` (batch mode) or ``send_all`` (non-batch mode)
once, and reads:

- **wall time**: from the call's start to its return (``time.perf_counter``);
- **requests**: HTTP inference requests, from ``pool.stats()`` (retries and backup requests count);
- **per-prompt latency**: from the call's start to the moment that prompt's answer settled,
  recorded by the ``on_result(index, response)`` hook, as nearest-rank p50 / p95 / p99;
- **client CPU**: user + system CPU seconds of this process only (``os.times``) during the call.
  The fake fleet runs in another process (:mod:`benchmarks.fleet_process`), so none of its work
  is counted here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Literal

import anyio
import attrs

from aurora_swarm import Chunking, Endpoint, VLLMPool

from .fleet_process import cpu_seconds

Mode = Literal["batch", "non-batch"]
MODES: tuple[Mode, Mode] = ("batch", "non-batch")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank ``q``-th percentile (0..100) of sorted values; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@attrs.frozen
class RunResult:
    """What one measured call did."""

    status: str  # "ok", "timeout" (cut off at the run time limit) or "failed" (an exception)
    prompts: int
    answered: int
    failed: int
    requests: int
    batch_requests: int
    wall_s: float
    client_cpu_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    note: str = ""

    @property
    def prompts_per_s(self) -> float:
        """Answered prompts per second of wall time."""
        return self.answered / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def cpu_us_per_prompt(self) -> float:
        """Client CPU microseconds per settled prompt."""
        settled = self.answered + self.failed
        return self.client_cpu_s / settled * 1e6 if settled else math.nan


class Tally:
    """Counts settled prompts and their latencies; the progress display reads ``settled``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = time.perf_counter()
        self.latencies: list[float] = []
        self.failed = 0

    @property
    def settled(self) -> int:
        return len(self.latencies)

    def __call__(self, index: int, response: object) -> None:
        self.latencies.append(time.perf_counter() - self.start)
        if not getattr(response, "success", False):
            self.failed += 1


def make_prompts(n: int, *, words: int = 0) -> list[str]:
    """``n`` distinct prompts (the fake fleet echoes them); ``words`` pads each with text."""
    pad = " ".join(f"w{k}" for k in range(words))
    suffix = f" {pad}" if pad else ""
    return [f"Prompt {i}: say something about the number {i}.{suffix}" for i in range(n)]


async def measure(
    endpoints: Sequence[Endpoint],
    prompts: Sequence[str],
    *,
    mode: Mode,
    model: str,
    max_tokens: int,
    chunking: Chunking | None = None,
    timeout: float | None = None,
    on_start: Callable[[Tally], None] | None = None,
    warm: bool = False,
) -> RunResult:
    """Run one call on a fresh pool and measure it (see the module docstring).

    With ``warm``, the same call runs once unmeasured first, on the same pool: the measured call
    then finds its connections open, its clients made, the model's context length known and the
    endpoints' speeds measured (a notebook's second call). Otherwise the measured call is the
    pool's first (a script's one call), set-up included.

    ``timeout`` bounds the call's wall time; a call cut off there is reported with
    ``status="timeout"`` and what it had answered so far. ``on_start`` gets the live
    :class:`Tally` (for a progress display).
    """
    pool = VLLMPool(list(endpoints), model=model, max_tokens=max_tokens,
                    use_batch=mode == "batch", chunking=chunking)
    status, note = "ok", ""
    async with pool:
        if warm:
            with anyio.fail_after(timeout):
                await _call(pool, prompts, mode, max_tokens, None)
        before = pool.stats()
        tally = Tally(len(prompts))
        if on_start is not None:
            on_start(tally)
        cpu0 = cpu_seconds()
        tally.start = start = time.perf_counter()
        with anyio.move_on_after(timeout) as scope:
            try:
                await _call(pool, prompts, mode, max_tokens, tally)
            except Exception as exc:  # a benchmark records the failure and goes on
                status, note = "failed", f"{type(exc).__name__}: {exc}"[:200]
        wall = time.perf_counter() - start
        cpu = cpu_seconds() - cpu0
        if scope.cancelled_caught:
            status, note = "timeout", f"cut off after {timeout:g} s"
        stats = pool.stats() - before
    latencies = sorted(tally.latencies)
    return RunResult(
        status=status,
        prompts=len(prompts),
        answered=tally.settled - tally.failed,
        failed=tally.failed,
        requests=stats.requests,
        batch_requests=stats.batch_requests,
        wall_s=wall,
        client_cpu_s=cpu,
        p50_s=percentile(latencies, 50),
        p95_s=percentile(latencies, 95),
        p99_s=percentile(latencies, 99),
        note=note,
    )


async def _call(pool: VLLMPool, prompts: Sequence[str], mode: Mode, max_tokens: int,
                on_result: Tally | None) -> None:
    if mode == "batch":
        await pool.send_all_batched(prompts, max_tokens, on_result=on_result)
    else:
        await pool.send_all(prompts, max_tokens=max_tokens, on_result=on_result)
