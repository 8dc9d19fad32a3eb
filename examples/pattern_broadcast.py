"""broadcast and broadcast_and_reduce: one prompt answered many times, then merged or voted on.

With a sampling temperature above zero, a real model gives different answers to the copies;
the fake fleet answers every copy alike, so the vote here is unanimous.

Run it with ``python examples/pattern_broadcast.py``.
"""

import anyio

from aurora_swarm import VLLMPool
from aurora_swarm.patterns import broadcast, broadcast_and_reduce, majority_vote
from aurora_swarm.testing import FakeFleet


async def main() -> None:
    async with FakeFleet(4) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=32,
                            sampling={"temperature": 0.8}) as pool:
            votes = await broadcast(pool, "Is 221 prime? Answer yes or no.", copies=16)
            result = majority_vote(votes)
            print(f"{len(votes)} answers; winner {result.winner!r} with {result.count}/"
                  f"{result.total} votes; agents {sorted({v.agent_index for v in votes})}")

            best = await broadcast_and_reduce(pool, "Propose a name for the compound.",
                                              "Pick the best name:\n{responses}", copies=4)
            print(best.text)

            # One chat request per agent, exactly: out[k] is agent k's answer.
            per_agent = await pool.broadcast_prompt("Which GPU are you on?")
            print([r.agent_index for r in per_agent])
            print(f"{pool.stats().requests} HTTP requests in all")


if __name__ == "__main__":
    anyio.run(main)
