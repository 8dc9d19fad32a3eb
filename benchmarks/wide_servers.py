"""Shares above ``whole_share`` on many-sequence servers: how far from the wave bound?

A share of up to ``Chunking.whole_share`` prompts an endpoint goes out whole. A larger share is
cut into chunks, two in flight at a time, and the first chunks are small bets while the
endpoints' speeds are unknown. On a server that runs many sequences at once (a GPU vLLM server,
256 by default), chunks smaller than its sequence slots leave slots idle, so a call can take
more waves than the work needs.

This benchmark sweeps the share on 8 fake servers of 256 slots and 200 ms a prompt, and prints
the wall time beside two bounds: the ideal (total work / total capacity, as if prompts were
fluid) and the wave bound (``ceil(share / 256)`` waves of 200 ms, what whole waves allow).

Run: ``python -m benchmarks.wide_servers [--repeat 3] [--out DIR]``
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
from pathlib import Path

import anyio

from aurora_swarm import Chunking

from .dispatch_balance import fresh_call
from .fleet_process import fleet_process

ENDPOINTS, SLOTS, PROMPT_TIME, OVERHEAD = 8, 256, 0.2, 0.005
SHARES = (200, 300, 400, 512, 768, 1024, 2048)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shares", type=lambda text: [int(s) for s in text.split(",")],
                        default=list(SHARES), help="comma-separated prompts per endpoint")
    parser.add_argument("--out", type=Path, default=None, help="also write results.md here")
    args = parser.parse_args()
    conditions = (
        f"{ENDPOINTS} fake endpoints (own process), {SLOTS} sequence slots each, "
        f"{PROMPT_TIME * 1000:.0f} ms a prompt, {OVERHEAD * 1000:.0f} ms a request; "
        f"default Chunking; a fresh pool per call; median of {args.repeat} runs"
    )
    lines = [
        conditions,
        "",
        "| prompts an endpoint | wall s | x ideal | wave bound s | x wave bound | requests |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    print(conditions)
    print(lines[2])
    print(lines[3])
    capacity = ENDPOINTS * SLOTS / PROMPT_TIME
    with fleet_process(ENDPOINTS, request_overhead=OVERHEAD, prompt_time=PROMPT_TIME,
                       max_concurrent_seqs=SLOTS) as endpoints:
        warm_up = [f"warm-up {i}" for i in range(100)]
        anyio.run(fresh_call, endpoints, warm_up, Chunking())  # not measured
        for share in args.shares:
            prompts = [f"prompt {i}" for i in range(share * ENDPOINTS)]
            runs = []
            for _ in range(args.repeat):
                gc.collect()
                time.sleep(0.3)  # the fleet finishes what called-off backups left
                runs.append(anyio.run(fresh_call, endpoints, prompts, Chunking()))
            wall = statistics.median(t for t, _ in runs)
            requests = statistics.median(q for _, q in runs)
            ideal = len(prompts) / capacity
            waves = math.ceil(share / SLOTS) * PROMPT_TIME + OVERHEAD
            line = (f"| {share:,} | {wall:.2f} | {wall / ideal:.2f} | {waves:.2f} | "
                    f"{wall / waves:.2f} | {requests:.0f} |")
            lines.append(line)
            print(line, flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
