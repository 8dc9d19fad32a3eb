"""Micro-batching: many agents, each with one prompt at a time, share batched requests.

Run it with ``python examples/microbatching.py``. Twenty agent loops each submit ten prompts one
by one; the ``MicroBatcher`` coalesces whatever is waiting into batched ``/v1/completions``
requests, and every agent still gets its own answer.
"""

import anyio

from aurora_swarm import MicroBatcher, VLLMPool
from aurora_swarm.testing import FakeFleet, LatencyModel


async def agent(batcher: MicroBatcher, task: int, log: list[bool]) -> None:
    for step in range(10):
        prompt = f"task {task}: step {step}"
        answer = await batcher.submit(prompt)  # one prompt in, its own answer out
        log.append(answer.text == f"ECHO: {prompt}")


async def main() -> None:
    latency = LatencyModel(request_overhead=0.005, prompt_time=0.01, max_concurrent_seqs=32)
    async with FakeFleet(2, latency=latency) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=32) as pool:
            log: list[bool] = []
            async with MicroBatcher(pool, max_batch=16, max_wait_ms=10) as batcher:
                async with anyio.create_task_group() as group:
                    for task in range(20):
                        group.start_soon(agent, batcher, task, log)
            stats = batcher.stats()
            print(f"{len(log)} prompts from 20 agents, each answer its own: {all(log)}")
            print(f"{pool.stats().requests} HTTP requests; mean batch {stats.mean_batch_size:.1f}")
            print(f"batch sizes: {dict(sorted(stats.batch_sizes.items()))}")


if __name__ == "__main__":
    anyio.run(main)
