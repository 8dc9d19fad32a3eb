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
and prints where this process's time goes. ``--endpoints 100,1000,4000 --per-endpoint 100``
sweeps fleet sizes (each its own fleet; ``--nonbatch-prompts 0`` skips non-batch mode), and
``--out DIR`` writes every row to ``DIR/results.csv`` with ``DIR/manifest.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import json
import pstats
import statistics
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

from aurora_swarm import Endpoint, VLLMPool

from .fleet_process import fleet_process
from .measure import Mode, RunResult, make_prompts, measure
from .report import manifest

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


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers >= 1, got {text!r}")
    return sizes


def measure_fleet(endpoints_n: int, prompts: int, nonbatch: int, args: argparse.Namespace,
                  ) -> tuple[list[dict[str, Any]], str]:
    """Every mode over one fleet of ``endpoints_n`` endpoints: rows, and a profile if asked."""
    rows: list[dict[str, Any]] = []
    with fleet_process(endpoints_n) as endpoints:
        run(endpoints, min(prompts, 2000), "batch", False, 1, args.max_tokens)  # warm-up
        sizes: list[tuple[Mode, int]] = [("batch", prompts)]
        if nonbatch > 0:
            sizes.append(("non-batch", nonbatch))
        for mode, n in sizes:
            for warm in (False, True):
                results = run(endpoints, n, mode, warm, args.repeat, args.max_tokens)
                us = statistics.median(r.cpu_us_per_prompt for r in results)
                mid = sorted(results, key=lambda r: r.cpu_us_per_prompt)[len(results) // 2]
                rows.append({"endpoints": endpoints_n, "mode": mode,
                             "pool": "warm" if warm else "fresh", "prompts": n,
                             "requests": mid.requests, "wall_s": round(mid.wall_s, 3),
                             "cpu_s": round(mid.client_cpu_s, 3), "us_per_prompt": round(us, 1),
                             "runs_us_per_prompt": " ".join(
                                 f"{r.cpu_us_per_prompt:.1f}" for r in results)})
                print(f"{endpoints_n:>9}{mode:>10}{'warm' if warm else 'fresh':>7}{n:>9,}"
                      f"{mid.requests:>10,}{mid.wall_s:>9.2f}{mid.client_cpu_s:>8.2f}{us:>11.1f}",
                      flush=True)
        report = profile(endpoints, prompts, args.max_tokens, args.top) if args.profile else ""
    return rows, report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.client_cpu",
                                description=(__doc__ or "").splitlines()[0])
    p.add_argument("--prompts", type=int, default=20000, help="batch mode (20000)")
    p.add_argument("--per-endpoint", type=int, default=None,
                   help="batch mode: this many prompts an endpoint (instead of --prompts)")
    p.add_argument("--nonbatch-prompts", type=int, default=1000,
                   help="non-batch mode (1000); 0 skips it")
    p.add_argument("--endpoints", type=_sizes, default=[100],
                   help="fleet size, or sizes separated by commas (100)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--profile", action="store_true", help="also cProfile a warm batch call")
    p.add_argument("--top", type=int, default=30, help="functions shown by --profile")
    p.add_argument("--out", type=Path, default=None,
                   help="write results.csv and manifest.json here")
    args = p.parse_args(argv)

    started = datetime.now(timezone.utc)
    print(f"Client CPU of this process, near-instant fake endpoints in another process; median "
          f"of {args.repeat} runs")
    print(f"{'endpoints':>9}{'mode':>10}{'pool':>7}{'prompts':>9}{'requests':>10}{'wall s':>9}"
          f"{'CPU s':>8}{'µs/prompt':>11}")
    rows: list[dict[str, Any]] = []
    reports: list[str] = []
    for endpoints_n in args.endpoints:
        prompts = (args.per_endpoint * endpoints_n if args.per_endpoint is not None
                   else args.prompts)
        fleet_rows, report = measure_fleet(endpoints_n, prompts, args.nonbatch_prompts, args)
        rows.extend(fleet_rows)
        if report:
            reports.append(f"\ncProfile of one warm batch call over {endpoints_n} endpoints "
                           f"(this process only):\n{report}")
    print()
    for endpoints_n in args.endpoints:
        mine = {(r["mode"], r["pool"]): r for r in rows if r["endpoints"] == endpoints_n}
        fresh, warm = mine["batch", "fresh"], mine["batch", "warm"]
        met = max(fresh["us_per_prompt"], warm["us_per_prompt"]) <= TARGET_US
        nonbatch = ""
        if ("non-batch", "fresh") in mine:
            one, one_warm = mine["non-batch", "fresh"], mine["non-batch", "warm"]
            nonbatch = (f" vs non-batch {one['us_per_prompt']:,.0f} µs/prompt "
                        f"({one_warm['us_per_prompt']:,.0f} warm) at {one['prompts']:,} prompts")
        print(f"{endpoints_n} endpoints, {fresh['prompts']:,} prompts: batch "
              f"{fresh['us_per_prompt']:.1f} µs/prompt ({warm['us_per_prompt']:.1f} warm)"
              f"{nonbatch}; "
              f"target batch <= {TARGET_US:g} µs/prompt, fresh and warm: "
              f"{'PASS' if met else 'FAIL'}")
    for report in reports:
        print(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        command = [Path(sys.executable).name, "-m", "benchmarks.client_cpu",
                   *(sys.argv[1:] if argv is None else argv)]
        (args.out / "manifest.json").write_text(json.dumps(
            manifest(config, started=started, finished=datetime.now(timezone.utc),
                     extra={"command": command,
                            "fleet": "near-instant fake endpoints, their own process"}),
            indent=2) + "\n")
        print(f"wrote {args.out / 'results.csv'}, {args.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
