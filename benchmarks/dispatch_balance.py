"""Does adaptive chunking keep every endpoint busy to the end?

Compares ``send_all_batched`` under the default adaptive chunking with a static split (one
share per endpoint, one request each) on fleets with slow endpoints, against the ideal finish
time: total work / total capacity. The fleet runs in its own process.

Run: ``python -m benchmarks.dispatch_balance [--prompts 3200] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import anyio

from aurora_swarm import Chunking, VLLMPool

from .fleet_process import fleet_process

MODEL = "fake-model"


async def one_run(endpoints: list, prompts: list[str], chunking: Chunking) -> tuple[float, int]:
    async with VLLMPool(endpoints, model=MODEL, max_tokens=16, chunking=chunking) as pool:
        start = time.perf_counter()
        out = await pool.send_all_batched(prompts)
        elapsed = time.perf_counter() - start
        assert all(r.success for r in out), "a prompt failed"
        return elapsed, pool.stats().requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3200)
    parser.add_argument("--endpoints", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, m = args.prompts, args.endpoints
    seqs, prompt_time, overhead = 32, 0.02, 0.005
    scenarios = {
        "uniform": {},
        "two endpoints 3x slower": {0: 3.0, 1: 3.0},
        "one endpoint 8x slower": {0: 8.0},
    }
    prompts = [f"prompt {i}" for i in range(n)]
    print(f"{n} prompts, {m} endpoints, {seqs} concurrent sequences each, "
          f"{prompt_time * 1000:.0f} ms a prompt, {overhead * 1000:.0f} ms a request; "
          f"median of {args.repeat} runs")
    print(f"{'fleet':<26}{'ideal s':>9}{'adaptive s':>12}{'x ideal':>9}{'requests':>10}"
          f"{'static s':>10}{'x ideal':>9}{'requests':>10}")
    for name, slow in scenarios.items():
        capacity = sum(seqs / (prompt_time * slow.get(i, 1.0)) for i in range(m))
        ideal = n / capacity
        with fleet_process(m, request_overhead=overhead, prompt_time=prompt_time,
                           max_concurrent_seqs=seqs, slow=slow) as endpoints:
            adaptive = [anyio.run(one_run, endpoints, prompts, Chunking())
                        for _ in range(args.repeat)]
            static_chunking = Chunking(chunk_size=math.ceil(n / m), max_in_flight=1,
                                       adapt_to_speed=False)
            static = [anyio.run(one_run, endpoints, prompts, static_chunking)
                      for _ in range(args.repeat)]
        a = statistics.median(t for t, _ in adaptive)
        s = statistics.median(t for t, _ in static)
        print(f"{name:<26}{ideal:>9.3f}{a:>12.3f}{a / ideal:>9.2f}{adaptive[0][1]:>10}"
              f"{s:>10.3f}{s / ideal:>9.2f}{static[0][1]:>10}")


if __name__ == "__main__":
    main()
