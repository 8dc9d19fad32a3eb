"""Pipelines: stages whose prompts are templates over the previous stage's output.

A broadcast stage sends one prompt ``n_agents`` times; a scatter stage maps over a list. Here:
brainstorm four ideas (broadcast), split them into a list, refine each (scatter), then pick one
(broadcast to one agent). ``on_stage`` reports each stage as it finishes.

Run it with ``python examples/pattern_pipeline.py``.
"""

import anyio

from aurora_swarm import VLLMPool
from aurora_swarm.patterns import Stage, StageResult, fan_out_fan_in, run_pipeline
from aurora_swarm.testing import FakeFleet


def report(result: StageResult) -> None:
    print(f"stage {result.index} {result.stage.name!r}: {len(result.prompts)} prompts, "
          f"{len(result.kept)} kept, {len(result.dropped)} dropped")


async def main() -> None:
    async with FakeFleet(4) as fleet:
        async with VLLMPool(fleet.endpoints, model=fleet.model, max_tokens=24) as pool:
            stages = [
                Stage("ideas", "Suggest an experiment to test: {input}", n_agents=4,
                      output_transform=lambda kept: [r.text for r in kept]),
                Stage("refine", "Make this experiment cheaper: {input}", scatter=True),
                Stage("pick", "Pick the most feasible experiment:\n{input}", n_agents=1),
            ]
            plan = await run_pipeline(pool, stages, "folding depends on temperature",
                                      on_stage=report)
            print("plan:", plan[:70], "...")

            merged = await fan_out_fan_in(pool, [f"Review section {s}" for s in "ABC"],
                                          "Write one report:\n{responses}")
            print("report:", repr(merged.text[:60]), "...")


if __name__ == "__main__":
    anyio.run(main)
