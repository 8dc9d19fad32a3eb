"""Endpoints, hostfiles, pools and sub-pools.

A hostfile lists one server a line, with optional ``key=value`` tags; ``parse_hostfile`` turns
it into ``Endpoint`` objects and a ``VLLMPool`` drives them. Sub-pools (``by_tag``, ``select``,
``sample``, ``slice``) are views of the same pool: they share its connections, limits, health
state and counters.

Run it with ``python examples/endpoints_and_pools.py``.
"""

import tempfile
from pathlib import Path

import anyio

from aurora_swarm import VLLMPool, parse_hostfile
from aurora_swarm.testing import FakeFleet


async def main() -> None:
    async with FakeFleet(6) as fleet:
        roles = ["worker"] * 4 + ["critic"] * 2
        with tempfile.TemporaryDirectory() as tmp:
            # A job script writes this file on a cluster; here the fake fleet writes it.
            hostfile = fleet.write_hostfile(Path(tmp) / "agents.hostfile",
                                            tags=[{"role": role} for role in roles])
            print(hostfile.read_text().splitlines()[0].replace("\t", "<TAB>"))
            endpoints = parse_hostfile(hostfile)

        print(endpoints[4], dict(endpoints[4].tags))

        async with VLLMPool(endpoints, model=fleet.model, max_tokens=32) as pool:
            critics = pool.by_tag("role", "critic")  # endpoints tagged role=critic
            workers = pool.by_tag("role", "worker")
            print("sizes:", pool.size, critics.size, workers.size, workers.slice(0, 2).size,
                  pool.select([0, 5]).size, pool.sample(3, seed=1).size)

            await workers.send_all_batched([f"Measure sample {i}." for i in range(40)])
            reviews = await critics.send_all_batched(["Review sample 7."])
            # Agent indices are positions in the pool that sent: critics' agent 0 is endpoint 4.
            print(reviews[0].agent_index, reviews[0].endpoint == endpoints[4])

            stats = pool.stats()  # the parent sees what every sub-pool sent
            print("requests per endpoint:", [e.requests for e in stats.endpoints])
            print("prompts per endpoint: ", [e.prompts for e in stats.endpoints])


if __name__ == "__main__":
    anyio.run(main)
