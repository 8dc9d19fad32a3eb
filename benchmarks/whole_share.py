"""Whole shares or chunks? The trade-off behind ``Chunking.whole_share``.

An endpoint's fair share of up to ``whole_share`` prompts goes out as one request; a larger one
is cut into chunks, two in flight at a time. On a server that runs many sequences at once (a GPU
vLLM server: 256 by default), chunks leave sequences idle; on servers of few sequences that
differ in speed, chunks let the fast ones take more. This benchmark measures both, with the
share (200 prompts an endpoint) between the old default (128) and the new (256), against the
ideal finish time (total work / total capacity).

Run: ``python -m benchmarks.whole_share [--repeat 3]``
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import anyio

from aurora_swarm import Chunking

from .dispatch_balance import fresh_call
from .fleet_process import fleet_process

ENDPOINTS, PROMPTS = 8, 1600
SERVERS = {  # name: (sequence slots, seconds a prompt)
    "256 sequences, 200 ms a prompt (GPU-like)": (256, 0.2),
    "32 sequences, 20 ms a prompt": (32, 0.02),
}
FLEETS: dict[str, dict[int, float]] = {"even": {}, "two 3x slower": {0: 3.0, 1: 3.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    prompts = [f"prompt {i}" for i in range(PROMPTS)]
    print(f"{PROMPTS} prompts over {ENDPOINTS} endpoints (200 each), 5 ms a request; median of "
          f"{args.repeat} runs, interleaved; multiples of the ideal time (requests)")
    print(f"{'servers':<44}{'fleet':<16}{'whole_share=128':>18}{'whole_share=256':>18}")
    for server, (seqs, prompt_time) in SERVERS.items():
        for fleet, slow in FLEETS.items():
            capacity = sum(seqs / (prompt_time * slow.get(i, 1.0)) for i in range(ENDPOINTS))
            ideal = PROMPTS / capacity
            runs: dict[int, list[tuple[float, int]]] = {128: [], 256: []}
            with fleet_process(ENDPOINTS, request_overhead=0.005, prompt_time=prompt_time,
                               max_concurrent_seqs=seqs, slow=slow) as endpoints:
                anyio.run(fresh_call, endpoints, prompts[:100], Chunking())  # warm-up, not measured
                for _ in range(args.repeat):
                    for share in runs:
                        gc.collect()
                        time.sleep(0.3)  # the fleet finishes what called-off requests left
                        runs[share].append(anyio.run(
                            fresh_call, endpoints, prompts, Chunking(whole_share=share)))
            cells = [
                f"{statistics.median(t for t, _ in r) / ideal:.2f}x "
                f"({statistics.median(q for _, q in r):.0f})"
                for r in runs.values()
            ]
            print(f"{server:<44}{fleet:<16}{cells[0]:>18}{cells[1]:>18}")


if __name__ == "__main__":
    main()
