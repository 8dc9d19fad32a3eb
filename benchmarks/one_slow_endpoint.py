"""One endpoint 4x slower: ``send_all_batched`` beside the equal split and the oracle split.

The fleet where adaptive dispatch first showed its worth: 7 fake endpoints of 32 sequence slots,
one of them 4x slower, 2,800 prompts, 5 ms a request. ``send_all_batched`` should be no slower
than the oracle split (shares from every endpoint's known slots and speed, one ``post_batch``
each), from a fresh pool as from a warm one, while the equal split takes about three times as
long. Two prompt times: 25 ms (about 0.4 s a call) and 100 ms (about 1.5 s).

Each run of a method on a fresh pool is followed by one on that method's warm pool (warmed by
one unmeasured call first); the methods take turns, median of ``--repeat`` runs. The warm-up
calls come first, so every fresh pool meets servers with a past on ``/metrics``, as a new
notebook meets servers that served earlier work (``benchmarks.dispatch_grid`` shows a fleet
that never served).

Run: ``python -m benchmarks.one_slow_endpoint [--repeat 5] [--prompt-ms 25,100]``
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import anyio

from aurora_swarm import Endpoint, VLLMPool

from .dispatch_grid import MAX_TOKENS, MODEL, Method, batched, settle, static, timed
from .fleet_process import fleet_process
from .grid_split import equal_split, oracle_split

ENDPOINTS, SLOTS, PROMPTS, OVERHEAD = 7, 32, 2800, 0.005
SLOWNESS = {0: 4.0}
POOLS = ("fresh", "warm")


def methods(prompt_time: float) -> dict[str, Method]:
    """The three ways of sending the prompts."""
    slots = [SLOTS] * ENDPOINTS
    slowness = [SLOWNESS.get(i, 1.0) for i in range(ENDPOINTS)]
    return {
        "batched": batched(1),
        "equal": static(1, lambda n: equal_split(n, ENDPOINTS)),
        "oracle": static(1, lambda n: oracle_split(n, slots, slowness, prompt_time, OVERHEAD)),
    }


async def measure(endpoints: Sequence[Endpoint], prompt_time: float,
                  repeat: int) -> dict[tuple[str, str], list[float]]:
    """Wall times of every method on fresh and warm pools, ``repeat`` runs each."""
    calls = methods(prompt_time)
    prompts = [f"prompt {i}" for i in range(PROMPTS)]
    walls: dict[tuple[str, str], list[float]] = {(m, p): [] for m in calls for p in POOLS}
    warm: dict[str, VLLMPool] = {}
    try:
        for name, call in calls.items():
            warm[name] = VLLMPool(list(endpoints), model=MODEL, max_tokens=MAX_TOKENS)
            await warm[name].__aenter__()
            await call(warm[name], prompts)  # the warm-up call, not measured
        for _ in range(repeat):
            for name, call in calls.items():
                await settle()
                async with VLLMPool(list(endpoints), model=MODEL,
                                    max_tokens=MAX_TOKENS) as pool:
                    walls[name, "fresh"].append((await timed(pool, call, prompts, 60)).wall)
                await settle()
                walls[name, "warm"].append((await timed(warm[name], call, prompts, 60)).wall)
    finally:
        for pool in warm.values():
            await pool.__aexit__(None, None, None)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per method (default 5)")
    parser.add_argument("--prompt-ms", default="25,100",
                        help="milliseconds a prompt, comma-separated (default 25,100)")
    args = parser.parse_args()
    print(f"{ENDPOINTS} fake endpoints x {SLOTS} slots, endpoint 0 {SLOWNESS[0]:g}x slower, "
          f"{PROMPTS:,} prompts, {OVERHEAD * 1000:g} ms a request; median of {args.repeat} "
          "runs, methods interleaved")
    verdicts = []
    for ms in (float(x) for x in args.prompt_ms.split(",")):
        prompt_time = ms / 1000
        with fleet_process(ENDPOINTS, request_overhead=OVERHEAD, prompt_time=prompt_time,
                           max_concurrent_seqs=SLOTS, slow=SLOWNESS) as endpoints:
            walls = anyio.run(measure, endpoints, prompt_time, args.repeat)
        for pool in POOLS:
            med = {m: statistics.median(walls[m, pool]) for m in ("batched", "equal", "oracle")}
            ratio = med["batched"] / med["oracle"]
            verdicts.append(ratio <= 1.0)
            runs = " ".join(f"{w:.3f}" for w in walls["batched", pool])
            print(f"{ms:g} ms a prompt, {pool} pool: send_all_batched {med['batched']:.3f} s "
                  f"(runs {runs}), equal split {med['equal']:.3f} s, oracle split "
                  f"{med['oracle']:.3f} s -> {ratio:.3f}x the oracle, "
                  f"{med['batched'] / med['equal']:.3f}x the equal split")
    print("check send_all_batched <= 1.0x the oracle split, fresh and warm: "
          + ("PASS" if all(verdicts) else "FAIL"))


if __name__ == "__main__":
    main()
