"""Patterns feeding patterns without glue."""

from __future__ import annotations

from aurora_swarm import VLLMPool
from aurora_swarm.patterns import (
    Stage,
    StageResult,
    broadcast,
    majority_vote,
    map_gather,
    run_pipeline,
    scatter_gather,
    structured_merge,
    tree_reduce,
    tree_reduce_tree,
)
from aurora_swarm.testing import FakeFleet

from .conftest import BIG


async def test_map_gather_answers_are_tree_reduce_leaves(pool: VLLMPool, fleet: FakeFleet) -> None:
    summaries = await map_gather(pool, [f"paper {i}" for i in range(20)], "Summarize {item}")
    requests = fleet.total_requests()
    tree = await tree_reduce_tree(pool, None, "Merge:\n{responses}", fanin=4, items=summaries,
                                  reduce_max_tokens=BIG)
    assert tree.leaves == tuple(summaries)  # taken as they are: no leaf request
    assert [len(level) for level in tree.levels] == [20, 5, 2, 1]
    assert fleet.total_requests() - requests >= 3  # only the three supervisor levels ran
    for i in range(20):
        assert f"ECHO: Summarize paper {i}" in tree.root.text


async def test_map_gather_answers_as_tree_reduce_items(pool: VLLMPool) -> None:
    summaries = await map_gather(pool, ["a", "b", "c"], "Summarize {item}")
    root = await tree_reduce(pool, "Check {item}", "Merge {responses}", fanin=2, items=summaries)
    for x in "abc":
        assert f"ECHO: Check ECHO: Summarize {x}" in root.text


async def test_pipeline_stage_is_a_scatter_and_ends_in_a_reduce(pool: VLLMPool) -> None:
    seen: list[StageResult] = []
    stages = [
        Stage("plan", "Split: {input}", n_agents=1,
              output_transform=lambda rs: rs[0].text.removeprefix("ECHO: Split: ").split(",")),
        Stage("work", "Solve {input}", scatter=True),
    ]
    solved = await run_pipeline(pool, stages, "x1,x2,x3", on_stage=seen.append)
    assert seen[1].stage.scatter and len(seen[1].responses) == 3
    root = await tree_reduce(pool, None, "Join {responses}", items=solved)
    assert root.text == "ECHO: Join " + "\n---\n".join(f"ECHO: Solve x{i}" for i in (1, 2, 3))


async def test_scatter_gather_as_a_user_stage(pool: VLLMPool) -> None:
    """A pipeline step that is itself a scatter: scatter_gather over a stage's output."""
    stages = [Stage("list", "{input}", n_agents=1,
                    output_transform=lambda rs: [f"q{i}" for i in range(len(rs[0].text))])]
    questions = await run_pipeline(pool, stages, "abc")
    answers = await scatter_gather(pool, questions)
    assert [a.text for a in answers] == [f"ECHO: q{i}" for i in range(len("ECHO: abc"))]


async def test_aggregators_take_any_patterns_output(pool: VLLMPool) -> None:
    assert majority_vote(await broadcast(pool, "yes", copies=5)).winner == "echo: yes"
    merged = structured_merge(await map_gather(pool, ['{"k": [1]}', '{"k": [2]}'], "{item}"))
    assert merged.merged == {"k": [1, 2]}
