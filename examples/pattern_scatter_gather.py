"""scatter_gather and map_gather: many prompts over the whole pool, answers in input order.

``scatter_gather`` sends a list of prompts; ``map_gather`` fills a template with each item
first. Answers feed the next step as they are: a ``Response`` item stands for its text, and a
failed one passes through as its own answer, without a request.

Run it with ``python examples/pattern_scatter_gather.py``.
"""

import anyio

from aurora_swarm import VLLMPool
from aurora_swarm.patterns import map_gather, scatter_gather
from aurora_swarm.testing import FakeFleet


async def main() -> None:
    async with FakeFleet(4) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=64) as pool:
            genes = ["BRCA1", "TP53", "EGFR", "MYC", "KRAS", "PTEN"]

            answers = await scatter_gather(pool, [f"What does {g} do?" for g in genes])
            print(answers[1].text)

            summaries = await map_gather(pool, genes, "Summarize what {item} does.")
            print(summaries[1].text)

            # Braces in items or templates are safe: only {item} is replaced.
            checks = await map_gather(pool, summaries, 'Check {item} and answer {"ok": bool}.')
            print(checks[1].text)
            print(f"{len(genes)} genes, 3 steps, {pool.stats().requests} HTTP requests")


if __name__ == "__main__":
    anyio.run(main)
