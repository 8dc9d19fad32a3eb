"""What batching saves: the same 1,000 prompts sent batched and one request per prompt.

Each fake server takes 5 ms per request plus 20 ms per prompt, running up to 32 prompts at
once, like a small vLLM server. Batched, a few large requests carry all the prompts; without
batching, every prompt is its own HTTP request.

Run it with ``python examples/batching.py``.
"""

import time

import anyio

from aurora_swarm import VLLMPool
from aurora_swarm.testing import FakeFleet, LatencyModel


async def run(fleet: FakeFleet, prompts: list[str], *, use_batch: bool) -> None:
    fleet.reset_counters()
    async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=32,
                        use_batch=use_batch) as pool:
        start = time.perf_counter()
        answers = await pool.send_all_batched(prompts)  # use_batch=False: one request each
        seconds = time.perf_counter() - start
    mode = "batched" if use_batch else "one per prompt"
    print(f"{mode:>15}: {fleet.total_requests():5} HTTP requests, {seconds:5.2f} s, "
          f"{sum(a.success for a in answers)} answered")


async def main() -> None:
    latency = LatencyModel(request_overhead=0.005, prompt_time=0.02, max_concurrent_seqs=32)
    prompts = [f"Classify abstract {i}." for i in range(1000)]
    async with FakeFleet(8, latency=latency) as fleet:
        print(f"{len(prompts)} prompts over {len(fleet)} endpoints")
        await run(fleet, prompts, use_batch=True)
        await run(fleet, prompts, use_batch=False)

        # post_batch: exactly ONE request, to one agent, carrying every prompt given.
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=32) as pool:
            fleet.reset_counters()
            replies = await pool.post_batch(0, prompts[:50])
            print(f"post_batch: {len(replies)} answers from {fleet.total_requests()} request")


if __name__ == "__main__":
    anyio.run(main)
