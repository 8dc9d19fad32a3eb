"""Client CPU per prompt: batch beside non-batch, on near-instant endpoints.

20,000 prompts over 100 fake endpoints that answer at once (the fleet in its own process, so
only the client's work is on this process's CPU clock): CPU microseconds per prompt of this
process, median of 3 runs, for batch mode (``send_all_batched``) and non-batch mode
(``send_all``, run on fewer prompts since it is slow; per-prompt figures are comparable).
Each mode on a fresh pool (the call is the pool's first: connections, clients, the model's
context length) and on a warm pool (the same call a second time).

The target: batch mode at most 25 µs per prompt at 20,000 prompts over 100 endpoints, and at
400,000 prompts over 4,000 endpoints (``--endpoints 4000 --prompts 400000``).

Run: ``python -m benchmarks.client_cpu [--prompts 20000] [--nonbatch-prompts 1000]
[--repeat 3] [--profile]``. ``--profile`` runs the warm batch call once more under cProfile
and prints where this process's time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
from collections.abc import Sequence

import anyio

from aurora_swarm import Endpoint, VLLMPool

from .fleet_process import fleet_process
from .measure import Mode, RunResult, make_prompts, measure

MODEL = "fake-model"
TARGET_US = 25.0


def run(endpoints: Sequence[Endpoint], n: int, mode: Mode, warm: bool, repeat: int,
        max_tokens: int) -> list[RunResult]:
    prompts = make_prompts(n)
    results = []
    for _ in range(repeat):
        result = anyio.run(lambda: measure(endpoints, prompts, mode=mode, model=MODEL,
                                           max_tokens=max_tokens, warm=warm, timeout=600))
        if result.status != "ok" or result.failed:
            raise SystemExit(f"{mode} run failed: {result}")
        results.append(result)
    return results


def profile(endpoints: Sequence[Endpoint], n: int, max_tokens: int, top: int) -> str:
    """cProfile of one warm batch call (``send_all_batched`` only), by own time."""
    prompts = make_prompts(n)
    profiler = cProfile.Profile()

    async def call() -> None:
        async with VLLMPool(list(endpoints), model=MODEL, max_tokens=max_tokens) as pool:
            await pool.send_all_batched(prompts)
            profiler.enable()
            await pool.send_all_batched(prompts)
            profiler.disable()

    anyio.run(call)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.client_cpu",
                                description=(__doc__ or "").splitlines()[0])
    p.add_argument("--prompts", type=int, default=20000, help="batch mode (20000)")
    p.add_argument("--nonbatch-prompts", type=int, default=1000, help="non-batch mode (1000)")
    p.add_argument("--endpoints", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--profile", action="store_true", help="also cProfile a warm batch call")
    p.add_argument("--top", type=int, default=30, help="functions shown by --profile")
    args = p.parse_args(argv)

    print(f"Client CPU of this process, {args.endpoints} near-instant fake endpoints in another "
          f"process; median of {args.repeat} runs")
    print(f"{'mode':<10}{'pool':<7}{'prompts':>9}{'requests':>10}{'wall s':>9}"
          f"{'CPU s':>8}{'µs/prompt':>11}")
    medians: dict[tuple[str, bool], float] = {}
    with fleet_process(args.endpoints) as endpoints:
        run(endpoints, min(args.prompts, 2000), "batch", False, 1, args.max_tokens)  # warm-up
        sizes: list[tuple[Mode, int]] = [("batch", args.prompts),
                                         ("non-batch", args.nonbatch_prompts)]
        for mode, n in sizes:
            for warm in (False, True):
                results = run(endpoints, n, mode, warm, args.repeat, args.max_tokens)
                us = statistics.median(r.cpu_us_per_prompt for r in results)
                medians[mode, warm] = us
                mid = sorted(results, key=lambda r: r.cpu_us_per_prompt)[len(results) // 2]
                print(f"{mode:<10}{'warm' if warm else 'fresh':<7}{n:>9,}{mid.requests:>10,}"
                      f"{mid.wall_s:>9.2f}{mid.client_cpu_s:>8.2f}{us:>11.1f}", flush=True)
        report = profile(endpoints, args.prompts, args.max_tokens, args.top) \
            if args.profile else ""
    batch = medians["batch", False]
    print(f"\nbatch {batch:.1f} µs/prompt ({medians['batch', True]:.1f} warm) vs non-batch "
          f"{medians['non-batch', False]:,.0f} µs/prompt ({medians['non-batch', True]:,.0f} warm)"
          f" at {args.prompts:,} / {args.nonbatch_prompts:,} prompts over {args.endpoints} "
          f"endpoints; target batch <= {TARGET_US:g} µs/prompt: "
          f"{'PASS' if batch <= TARGET_US else 'FAIL'}")
    if report:
        print("\ncProfile of one warm batch call (this process only):\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
