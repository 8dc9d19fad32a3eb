"""A first scatter_gather: ten prompts over four local fake vLLM servers.

Run it with ``python examples/quickstart.py``. No GPU and no model are needed: ``FakeFleet``
starts fake OpenAI-compatible vLLM servers on loopback ports inside this process, and each one
answers a prompt with ``"ECHO: "`` followed by the prompt.
"""

import anyio

from aurora_swarm import VLLMPool
from aurora_swarm.patterns.scatter_gather import scatter_gather
from aurora_swarm.testing import FakeFleet


async def main() -> None:
    async with FakeFleet(4) as fleet:  # four fake vLLM servers; on a cluster, real ones
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=64) as pool:
            prompts = [f"Name one use of element number {z}." for z in range(1, 11)]
            answers = await scatter_gather(pool, prompts)  # answers[i] answers prompts[i]

            for prompt, answer in zip(prompts, answers, strict=True):
                print(f"{prompt!r:42} -> {answer.text!r} (agent {answer.agent_index})")
            print(f"{len(prompts)} prompts, {sum(a.success for a in answers)} answered, "
                  f"{pool.stats().requests} HTTP requests")


if __name__ == "__main__":
    anyio.run(main)
