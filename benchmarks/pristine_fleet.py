"""A fresh pool's first call over a fleet that has never served: ``send_all_batched`` beside
the oracle and equal splits.

A pool's first call over servers with a past plans with what their ``/metrics`` tell of it (see
the dispatch grid). A fleet just started has no past: this benchmark starts a new fake fleet
(its own process) for every measured run, so each batched call is the first the servers see.
The oracle and equal splits, which plan nothing from the servers, run after it on the same
fleet. The fleet shapes are the dispatch grid's (8 endpoints of 16 or 256 slots; uniform, two
3x slower, one 8x slower), with its prompt times.

Run: ``python -m benchmarks.pristine_fleet [--repeat N] [--per-endpoint 8,64,300] [--callers 8]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio

from aurora_swarm import Endpoint, VLLMPool

from .dispatch_grid import (
    ENDPOINTS,
    MAX_TOKENS,
    MODEL,
    OVERHEAD,
    SHAPES,
    Cell,
    methods,
    prompt_time_for,
    settle,
    timed,
)
from .fleet_process import fleet_process


async def _one(endpoints: list[Endpoint], cell: Cell, prompt_time: float) -> dict[str, float]:
    prompts = [f"prompt {i} of the grid" for i in range(cell.prompts)]
    calls = methods(cell, prompt_time)
    walls: dict[str, float] = {}
    for name in ("batched", "oracle", "equal"):
        await settle()
        async with VLLMPool(endpoints, model=MODEL, max_tokens=MAX_TOKENS) as pool:
            walls[name] = (await timed(pool, calls[name], prompts, 120.0)).wall
    return walls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fleets started a cell (3)")
    parser.add_argument("--slots", default="16,256")
    parser.add_argument("--shape", default=",".join(SHAPES))
    parser.add_argument("--per-endpoint", default="8,64,300")
    parser.add_argument("--callers", type=int, default=1,
                        help="concurrent callers on the pool, each with its share (1)")
    args = parser.parse_args()
    print(f"{ENDPOINTS} fake endpoints started anew for every run (no past to read), "
          f"{OVERHEAD * 1000:g} ms a request; a fresh pool, {args.callers} caller(s); median of "
          f"{args.repeat} fleets", flush=True)
    worst = 0.0
    for slots in (int(x) for x in args.slots.split(",")):
        for shape in args.shape.split(","):
            for per_endpoint in (int(x) for x in args.per_endpoint.split(",")):
                cell = Cell(slots, shape, per_endpoint, "fresh", args.callers)
                prompt_time = prompt_time_for(slots, per_endpoint)
                runs: list[dict[str, float]] = []
                for _ in range(args.repeat):
                    with fleet_process(ENDPOINTS, request_overhead=OVERHEAD,
                                       prompt_time=prompt_time, max_concurrent_seqs=slots,
                                       slow=SHAPES[shape]) as endpoints:
                        runs.append(anyio.run(_one, endpoints, cell, prompt_time))
                ratio = statistics.median(r["batched"] / r["oracle"] for r in runs)
                equal = statistics.median(r["equal"] / r["oracle"] for r in runs)
                worst = max(worst, ratio)
                each = " ".join(f"{r['batched'] / r['oracle']:.2f}" for r in runs)
                print(f"{cell.label()}, {prompt_time * 1000:g} ms a prompt: first call "
                      f"{ratio:.2f}x the oracle split (runs {each}); the equal split "
                      f"{equal:.2f}x", flush=True)
    print(f"worst: {worst:.2f}x the oracle split")
    return 0


if __name__ == "__main__":
    start = time.monotonic()
    code = main()
    print(f"({time.monotonic() - start:.0f} s)")
    raise SystemExit(code)
