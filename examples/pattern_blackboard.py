"""Blackboard: agents in roles take turns writing to named sections of a shared board.

Endpoints carry a ``role`` tag (from the hostfile on a cluster; set here by hand). Each round,
the ``hypotheses`` agents propose and then the ``critiques`` agents, who already see this
round's hypotheses, critique. A convergence function may stop the rounds early.

Run it with ``python examples/pattern_blackboard.py``.
"""

import anyio

from aurora_swarm import Endpoint, VLLMPool
from aurora_swarm.patterns import Blackboard
from aurora_swarm.testing import FakeFleet


async def main() -> None:
    async with FakeFleet(3) as fleet:
        roles = ["hypotheses", "hypotheses", "critiques"]
        endpoints = [Endpoint(e.host, e.port, {"role": role})
                     for e, role in zip(fleet.endpoints, roles, strict=True)]
        async with VLLMPool(endpoints, model=fleet.model, max_tokens=12) as pool:
            board = Blackboard(["hypotheses", "critiques"], {
                "hypotheses": "Round {round}. Propose one hypothesis about protein X.",
                "critiques": "Critique the latest hypotheses:\n{hypotheses}",
            }, keep_last=4)
            final = await board.run(pool, max_rounds=3,
                                    convergence_fn=lambda b: len(b["critiques"]) >= 2)
            print(f"stopped after {board.round} rounds")
            for section, entries in final.items():
                print(f"{section}: {len(entries)} entries; the last: {entries[-1]!r}")
            print(board.history[0].to_dict()["board"]["hypotheses"])


if __name__ == "__main__":
    anyio.run(main)
