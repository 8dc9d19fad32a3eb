"""tree_reduce on the fake fleet: request budget, leaf visibility, failures, empty input."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from aurora_swarm import BatchError, Chunking, ConfigurationError, Response, VLLMPool
from aurora_swarm.patterns import NoAnswerError, ReduceTree, tree_reduce, tree_reduce_tree
from aurora_swarm.testing import EndpointBehavior, FakeFleet, LatencyModel

from .conftest import BIG, LONG_CONTEXT, MODEL, ScriptedPool, fleet_of, open_pool

ITEMS = [f"item-{i:03d}" for i in range(256)]
LEAF = "Analyze {item}"
REDUCE = "Merge (level {level}):\n{responses}"


class CountingPool:
    """A ``Pool`` wrapper that records, per call, the prompts and the fleet's new requests."""

    def __init__(self, pool: VLLMPool, fleet: FakeFleet) -> None:
        self.pool = pool
        self.fleet = fleet
        self.calls: list[tuple[int, int]] = []  # (prompts, HTTP requests)

    @property
    def size(self) -> int:
        return self.pool.size

    async def send_all_batched(
        self, prompts: Sequence[str], max_tokens: int | None = None
    ) -> list[Response]:
        before = self.fleet.total_requests()
        out = await self.pool.send_all_batched(prompts, max_tokens)
        self.calls.append((len(prompts), self.fleet.total_requests() - before))
        return out


def check_every_leaf_reaches_the_root(tree: ReduceTree, items: Sequence[str]) -> None:
    assert tree.success
    top = len(tree.levels) - 1
    for index, item in enumerate(items):
        leaf = tree.levels[0][index]
        assert leaf.text == f"ECHO: Analyze {item}"
        assert leaf.text in tree.root.text  # the echoes nest: the root holds every leaf
        path = tree.path(index)
        assert path[-1] == (top, 0)  # ...and the tree says which supervisors carried it
        for (level, node), (_, child) in zip(path[1:], path, strict=False):
            assert tree.levels[level - 1][child].text in tree.prompts[level][node]


async def run_256(pool: VLLMPool, fleet: FakeFleet) -> tuple[ReduceTree, CountingPool]:
    counting = CountingPool(pool, fleet)
    tree = await tree_reduce_tree(counting, LEAF, REDUCE, fanin=8, items=ITEMS, max_tokens=16,
                                  reduce_max_tokens=BIG)
    return tree, counting


VLLM_LIKE = LatencyModel(request_overhead=0.005, prompt_time=0.002, max_concurrent_seqs=32)


@pytest.mark.parametrize(
    ("latency", "chunking"),
    [
        (None, None),
        (VLLM_LIKE, None),
        (None, Chunking(chunk_size=64)),
    ],
    ids=["instant", "vllm-like", "chunk-64"],
)
async def test_256_items_fanin_8_on_4_endpoints_within_32_requests(
    latency: LatencyModel | None, chunking: Chunking | None
) -> None:
    async with fleet_of(4, model=MODEL, max_model_len=LONG_CONTEXT, latency=latency) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport, chunking=chunking) as pool:
            tree, counting = await run_256(pool, fleet)
            stats = pool.stats()
    assert [len(level) for level in tree.levels] == [256, 32, 4, 1]
    assert [prompts for prompts, _ in counting.calls] == [256, 32, 4, 1]  # one call per level
    assert fleet.total_requests() <= 32, counting.calls  # one request per prompt would be 293
    assert stats.requests <= 32
    check_every_leaf_reaches_the_root(tree, ITEMS)


async def test_without_batching_it_is_one_request_per_prompt(fleet: FakeFleet) -> None:
    async with open_pool(fleet.endpoints, transport=fleet.transport, use_batch=False) as pool:
        tree, _ = await run_256(pool, fleet)
    assert fleet.total_requests() == 256 + 32 + 4 + 1
    check_every_leaf_reaches_the_root(tree, ITEMS)


async def test_tree_reduce_returns_the_root(pool: VLLMPool) -> None:
    root = await tree_reduce(pool, LEAF, REDUCE, fanin=4, items=["a", "b", "c"])
    assert root.success
    assert root.text.startswith("ECHO: Merge (level 1):")
    for item in "abc":
        assert f"ECHO: Analyze {item}" in root.text


async def test_groups_are_balanced_and_in_order(pool: VLLMPool) -> None:
    tree = await tree_reduce_tree(pool, LEAF, REDUCE, fanin=4, items=[str(i) for i in range(9)])
    assert tree.groups[1] == ((0, 1, 2), (3, 4, 5), (6, 7, 8))  # not 4 + 4 + 1
    assert tree.groups[2] == ((0, 1, 2),)
    assert tree.depth == 2 and tree.children(2, 0) == tree.levels[1]
    assert tree.parent(0, 4) == 1 and tree.parent(2, 0) is None
    assert "level 2" in tree.prompts[2][0]


async def test_broadcast_leaves_without_items(pool: VLLMPool, fleet: FakeFleet) -> None:
    tree = await tree_reduce_tree(pool, "Guess a number", REDUCE, fanin=2)
    assert len(tree.leaves) == pool.size
    assert all(r.text == "ECHO: Guess a number" for r in tree.leaves)
    assert [len(level) for level in tree.levels] == [4, 2, 1]
    assert fleet.total_requests() >= 3


async def test_separate_max_tokens_for_reduce_steps(pool: VLLMPool) -> None:
    tree = await tree_reduce_tree(pool, "{item} one two three", REDUCE, fanin=8,
                                  items=["x", "y"], max_tokens=2, reduce_max_tokens=500)
    assert [r.text for r in tree.leaves] == ["ECHO: x", "ECHO: y"]
    assert {r.finish_reason for r in tree.leaves} == {"length"}
    assert tree.root.finish_reason == "stop" and "ECHO: x" in tree.root.text


async def test_supervisors_run_on_their_own_pool(pool: VLLMPool, fleet: FakeFleet) -> None:
    tree = await tree_reduce_tree(pool, LEAF, REDUCE, fanin=2, items=list("abcd"),
                                  supervisors=pool.select([3]))
    assert tree.success
    assert {r.agent_index for r in tree.levels[1] + tree.levels[2]} == {0}  # its agent 0
    assert {r.endpoint for r in tree.levels[1]} == {fleet.endpoints[3]}


async def test_single_leaf_is_the_root(pool: VLLMPool) -> None:
    tree = await tree_reduce_tree(pool, LEAF, REDUCE, items=["only"])
    assert tree.root is tree.leaves[0] and tree.depth == 0


# -- failures ------------------------------------------------------------------------------------


async def test_a_dead_endpoint_and_503s_lose_nothing() -> None:
    behaviors = {1: EndpointBehavior(die_after=0), 2: EndpointBehavior(script=("503", "503"))}
    async with fleet_of(4, model=MODEL, max_model_len=LONG_CONTEXT,
                         behaviors=behaviors) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport) as pool:
            tree = await tree_reduce_tree(pool, LEAF, REDUCE, fanin=8, items=ITEMS[:64])
    assert not tree.dropped
    check_every_leaf_reaches_the_root(tree, ITEMS[:64])
    assert fleet.counters(2).faults.get("503", 0) >= 1


async def test_failed_and_empty_answers_are_left_out_and_recorded() -> None:
    pool = ScriptedPool()
    items = ["a", "FAIL-1", "b", "EMPTY", "c", Response(success=False, error="upstream")]
    tree = await tree_reduce_tree(pool, LEAF, REDUCE, fanin=8, items=items)
    assert tree.success
    assert [(d.level, d.index, d.reason) for d in tree.dropped] == [
        (0, 1, "failed"), (0, 3, "empty"), (0, 5, "failed")]
    assert tree.groups[1] == ((0, 2, 4),)
    assert "FAIL" not in tree.root.text and "EMPTY" not in tree.root.text
    assert tree.prompts[0][5] == ""  # the failed item was passed through, not sent
    assert pool.calls[0][0] == ["Analyze a", "Analyze FAIL-1", "Analyze b", "Analyze EMPTY",
                                "Analyze c"]


async def test_a_failed_supervisor_is_dropped_and_the_rest_merge() -> None:
    pool = ScriptedPool()
    # The supervisor that merges "FAIL" fails; its siblings still reach the root.
    tree = await tree_reduce_tree(pool, None, REDUCE, fanin=2, items=["a", "FAIL", "b", "c"])
    assert tree.success
    assert [(d.level, d.index) for d in tree.dropped] == [(1, 0)]
    assert "ECHO: Merge" in tree.root.text and "b" in tree.root.text
    assert tree.root is tree.levels[1][1]  # one usable answer left: it is the root


async def test_everything_failing_says_so() -> None:
    behaviors = [EndpointBehavior(die_after=0)] * 2
    async with fleet_of(2, model=MODEL, behaviors=behaviors) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport) as pool:
            tree = await tree_reduce_tree(pool, LEAF, REDUCE, items=["a", "b", "c"])
    assert not tree.success and not tree.root.success
    assert isinstance(tree.root.exception, NoAnswerError)
    assert "no usable answer at level 0 (3 failed, 0 empty)" in (tree.root.error or "")
    assert tree.root.exception.__cause__ is not None
    assert len(tree.dropped) == 3 and tree.depth == 0


async def test_empty_items_send_nothing(pool: VLLMPool, fleet: FakeFleet) -> None:
    root = await tree_reduce(pool, LEAF, REDUCE, items=[])
    assert not root.success and isinstance(root.exception, NoAnswerError)
    assert "nothing to reduce" in (root.error or "")
    assert fleet.total_requests() == 0


async def test_braces_in_items_and_templates(pool: VLLMPool) -> None:
    items = ['{"gene": "TP53", "score": {"x": 1}}', "def f(): return {}", "{item}", "{level}"]
    tree = await tree_reduce_tree(pool, 'Parse {item} into {"out": ...}',
                                  'Merge {"level": {level}} {responses}', fanin=8, items=items)
    assert tree.success
    for item in items:
        assert f'ECHO: Parse {item} into {{"out": ...}}' in tree.root.text
    assert tree.prompts[1][0].startswith('Merge {"level": 1} ECHO: Parse')


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("{item}", "no placeholder"), {"items": ["a"]}, "{responses}"),
        (("no placeholder", REDUCE), {"items": ["a"]}, "{item}"),
        ((LEAF, REDUCE), {"items": ["a"], "fanin": 1}, "fanin"),
        ((LEAF, REDUCE), {"items": "abc"}, "one string"),
        ((None, REDUCE), {}, "prompt, or items"),
        ((LEAF, REDUCE), {"items": ["a"], "reduce_max_tokens": 0}, "reduce_max_tokens"),
    ],
)
async def test_bad_arguments_raise_at_once(
    args: tuple[str | None, str], kwargs: dict[str, object], message: str
) -> None:
    pool = ScriptedPool()
    with pytest.raises(ConfigurationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        await tree_reduce(pool, *args, **kwargs)  # type: ignore[arg-type]
    assert pool.calls == []


async def test_a_strict_pool_raises_instead() -> None:
    async with fleet_of(1, model=MODEL, behaviors=[EndpointBehavior(die_after=0)]) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport, strict=True) as pool:
            with pytest.raises(BatchError):
                await tree_reduce(pool, LEAF, REDUCE, items=["a", "b"])
