"""Turn on aurora_swarm's log: an endpoint benched, down and back, and each call's summary.

aurora_swarm logs through the standard ``logging`` module under ``aurora_swarm`` and prints
nothing until the application configures logging. Here one of three endpoints dies in the
middle of a call and comes back; the log shows it once each, plus the call's summary (its
retries), and nothing per prompt.

Run it with ``python examples/logging_setup.py``.
"""

import logging
import sys

import anyio

from aurora_swarm import HealthPolicy, RetryPolicy, VLLMPool
from aurora_swarm.testing import FakeFleet, LatencyModel


def configure_logging() -> None:
    """What a notebook or a batch job does once, at the top."""
    logging.basicConfig(
        stream=sys.stdout,  # a batch job: filename="job.log" keeps it beside the results
        level=logging.WARNING,  # other libraries stay quiet
        format="%(name)s %(levelname)s %(message)s",  # add %(asctime)s in a real job
    )
    logging.getLogger("aurora_swarm").setLevel(logging.INFO)  # DEBUG: every failed request


async def main() -> None:
    configure_logging()
    latency = LatencyModel(prompt_time=0.01, max_concurrent_seqs=8)
    health = HealthPolicy(failure_threshold=2, cooldown=0.05, max_cooldown=0.1)
    retry = RetryPolicy(max_attempts=8, initial_backoff=0.005, max_backoff=0.05)
    prompts = [f"Classify abstract {i}." for i in range(6000)]
    async with FakeFleet(3, latency=latency) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=16,
                            health=health, retry=retry) as pool:

            async def outage() -> None:
                await anyio.sleep(0.3)
                await fleet.kill(0)  # the server dies mid-call...
                await anyio.sleep(0.5)
                await fleet.restart(0)  # ...and comes back

            async with anyio.create_task_group() as group:
                group.start_soon(outage)
                answers = await pool.send_all_batched(prompts)
    print(f"{sum(a.success for a in answers)}/{len(prompts)} answered")


if __name__ == "__main__":
    anyio.run(main)
