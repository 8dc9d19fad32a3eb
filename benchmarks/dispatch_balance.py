"""Does adaptive chunking keep every endpoint busy to the end?

Compares ``send_all_batched`` under the default adaptive chunking with a static split (one
share per endpoint, one request each) on fleets with slow endpoints, against the ideal finish
time: total work / total capacity. The fleet runs in its own process.

Three ways of calling are measured, interleaved run by run on the same fleet:

* ``adaptive``: a fresh pool's first call, which knows nothing of the endpoints' speeds;
* ``adaptive, warm``: a pool's second call, with the speeds its first call measured;
* ``static``: ``Chunking(chunk_size=ceil(n / m), max_in_flight=1, adapt_to_speed=False)``.

Before the measured runs one unmeasured call warms the process up (imports, first
connections); before each run the garbage collector runs and the fleet gets a moment to finish
any prompt a called-off request left behind.

Run: ``python -m benchmarks.dispatch_balance [--prompts 3200] [--repeat 7] [--out DIR]``
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import json
import math
import statistics
import time
from pathlib import Path

import anyio

from aurora_swarm import Chunking, Endpoint, VLLMPool

from .fleet_process import fleet_process

MODEL = "fake-model"
SEQS, PROMPT_TIME, OVERHEAD = 32, 0.02, 0.005
SCENARIOS: dict[str, dict[int, float]] = {
    "uniform": {},
    "two endpoints 3x slower": {0: 3.0, 1: 3.0},
    "one endpoint 8x slower": {0: 8.0},
}


async def _timed(pool: VLLMPool, prompts: list[str]) -> tuple[float, int]:
    before = pool.stats().requests
    start = time.perf_counter()
    out = await pool.send_all_batched(prompts)
    elapsed = time.perf_counter() - start
    failed = [i for i, r in enumerate(out) if not r.success]
    if failed:
        raise SystemExit(f"prompts failed (first: {failed[0]}): the fleet is not healthy")
    return elapsed, pool.stats().requests - before


async def fresh_call(endpoints: list[Endpoint], prompts: list[str],
                     chunking: Chunking) -> tuple[float, int]:
    """One call on a new pool (its first)."""
    async with VLLMPool(endpoints, model=MODEL, max_tokens=16, chunking=chunking) as pool:
        return await _timed(pool, prompts)


async def warm_call(endpoints: list[Endpoint], prompts: list[str]) -> tuple[float, int]:
    """A pool's second call: the first (not timed) measured the endpoints' speeds."""
    async with VLLMPool(endpoints, model=MODEL, max_tokens=16) as pool:
        await pool.send_all_batched(prompts)
        await anyio.sleep(0.2)  # let the fleet finish what called-off requests left behind
        return await _timed(pool, prompts)


def _settle() -> None:
    gc.collect()
    time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3200)
    parser.add_argument("--endpoints", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None,
                        help="write results.csv and manifest.json here")
    args = parser.parse_args()
    n, m = args.prompts, args.endpoints
    prompts = [f"prompt {i}" for i in range(n)]
    static = Chunking(chunk_size=math.ceil(n / m), max_in_flight=1, adapt_to_speed=False)
    print(f"{n} prompts, {m} endpoints, {SEQS} concurrent sequences each, "
          f"{PROMPT_TIME * 1000:.0f} ms a prompt, {OVERHEAD * 1000:.0f} ms a request; "
          f"{args.repeat} runs of each, interleaved; multiples of the ideal (median [min-max])")
    print(f"{'fleet':<26}{'ideal s':>8}{'adaptive':>22}{'req':>5}{'adaptive, warm':>22}"
          f"{'req':>5}{'static':>8}{'req':>5}")
    rows = []
    for name, slow in SCENARIOS.items():
        capacity = sum(SEQS / (PROMPT_TIME * slow.get(i, 1.0)) for i in range(m))
        ideal = n / capacity
        runs: dict[str, list[tuple[float, int]]] = {"adaptive": [], "warm": [], "static": []}
        with fleet_process(m, request_overhead=OVERHEAD, prompt_time=PROMPT_TIME,
                           max_concurrent_seqs=SEQS, slow=slow) as endpoints:
            anyio.run(fresh_call, endpoints, prompts, Chunking())  # warm-up, not measured
            for _ in range(args.repeat):
                _settle()
                runs["adaptive"].append(anyio.run(fresh_call, endpoints, prompts, Chunking()))
                _settle()
                runs["warm"].append(anyio.run(warm_call, endpoints, prompts))
                _settle()
                runs["static"].append(anyio.run(fresh_call, endpoints, prompts, static))
        cells = []
        for kind, results in runs.items():
            ratios = sorted(t / ideal for t, _ in results)
            requests = statistics.median(r for _, r in results)
            rows.append({
                "fleet": name, "mode": kind, "ideal_s": round(ideal, 4),
                "median_x": round(statistics.median(ratios), 3),
                "min_x": round(ratios[0], 3), "max_x": round(ratios[-1], 3),
                "median_requests": requests, "runs_x": " ".join(f"{r:.3f}" for r in ratios),
            })
            cells.append((statistics.median(ratios), ratios[0], ratios[-1], requests))
        (a, a0, a1, ar), (w, w0, w1, wr), (s, _, _, sr) = cells
        print(f"{name:<26}{ideal:>8.3f}{f'{a:.2f} [{a0:.2f}-{a1:.2f}]':>22}{ar:>5.0f}"
              f"{f'{w:.2f} [{w0:.2f}-{w1:.2f}]':>22}{wr:>5.0f}{s:>8.2f}{sr:>5.0f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with (args.out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        manifest = {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "prompts": n, "endpoints": m, "repeat": args.repeat,
            "concurrent_seqs": SEQS, "prompt_time_s": PROMPT_TIME,
            "request_overhead_s": OVERHEAD,
            "ideal": "total work / total capacity = prompts / sum(seqs / (prompt_time * slowness))",
        }
        (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"results in {args.out}")


if __name__ == "__main__":
    main()
