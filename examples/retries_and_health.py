"""Retries and endpoint health: a flaky endpoint, a dead endpoint, then a dead fleet.

Endpoint 0 fails a third of its requests with a transient fault (HTTP 500, 503, 429 or a
dropped connection) and endpoint 3 dies at its first request. Failed chunks move to other
endpoints; the dead endpoint is benched and probed; every prompt is still answered. When every
endpoint is down, the call ends at once with a per-prompt ``EndpointUnavailable``.

Run it with ``python examples/retries_and_health.py``.
"""

import time

import anyio

from aurora_swarm import HealthPolicy, RetryPolicy, VLLMPool
from aurora_swarm.testing import EndpointBehavior, FakeFleet, LatencyModel


async def main() -> None:
    behaviors = {0: EndpointBehavior(fault_rate=0.33, seed=3), 3: EndpointBehavior(die_after=0)}
    latency = LatencyModel(prompt_time=0.002, max_concurrent_seqs=16)
    async with FakeFleet(4, behaviors=behaviors, latency=latency) as fleet:
        async with VLLMPool(
            fleet.endpoints, model=fleet.model, max_tokens=16,
            retry=RetryPolicy(max_attempts=4, initial_backoff=0.05, max_backoff=1.0),
            health=HealthPolicy(failure_threshold=2, cooldown=0.5),
        ) as pool:
            prompts = [f"Estimate the melting point of compound {i}." for i in range(600)]
            answers = await pool.send_all_batched(prompts)
            stats = pool.stats()
            print(f"answered {sum(a.success for a in answers)}/{len(prompts)} with "
                  f"{stats.requests} requests; {stats.retries} prompts were sent again")
            print("failed requests by cause:", dict(sorted(stats.failures.items())))
            print("prompts answered per endpoint:", [e.answered for e in stats.endpoints])
            print("endpoint 3 alive:", fleet.is_alive(3))

            for index in range(len(fleet)):
                await fleet.kill(index)
            start = time.perf_counter()
            lost = await pool.send_all_batched(prompts[:20])
            print(f"fleet down: {sum(not a.success for a in lost)} failed in "
                  f"{time.perf_counter() - start:.1f} s; {type(lost[0].exception).__name__}")


if __name__ == "__main__":
    anyio.run(main)
