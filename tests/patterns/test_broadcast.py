"""broadcast and broadcast_and_reduce on the fake fleet."""

from __future__ import annotations

import pytest

from aurora_swarm import ConfigurationError, VLLMPool
from aurora_swarm.patterns import NoAnswerError, broadcast, broadcast_and_reduce
from aurora_swarm.testing import EndpointBehavior, FakeFleet

from .conftest import MODEL, ScriptedPool, fleet_of, open_pool


async def test_broadcast_once_per_agent_by_default(pool: VLLMPool, fleet: FakeFleet) -> None:
    out = await broadcast(pool, "Is 221 prime?")
    assert [r.text for r in out] == ["ECHO: Is 221 prime?"] * 4
    assert fleet.total_requests() >= 1


async def test_broadcast_copies_are_batched(pool: VLLMPool, fleet: FakeFleet) -> None:
    out = await broadcast(pool, "sample", copies=40)
    assert len(out) == 40 and all(r.text == "ECHO: sample" for r in out)
    assert fleet.total_requests() < 40


async def test_broadcast_zero_copies_is_empty(pool: VLLMPool, fleet: FakeFleet) -> None:
    assert await broadcast(pool, "x", copies=0) == []
    assert fleet.total_requests() == 0


async def test_broadcast_on_a_sub_pool(pool: VLLMPool, fleet: FakeFleet) -> None:
    out = await broadcast(pool.select([2]), "only two")
    assert len(out) == 1 and out[0].endpoint == fleet.endpoints[2]


async def test_broadcast_survives_a_dead_endpoint() -> None:
    async with fleet_of(3, model=MODEL, behaviors={1: EndpointBehavior(die_after=0)}) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport) as pool:
            out = await broadcast(pool, "hello", copies=12)
    assert all(r.success and r.text == "ECHO: hello" for r in out)


async def test_broadcast_and_reduce_merges_every_answer(pool: VLLMPool, fleet: FakeFleet) -> None:
    out = await broadcast_and_reduce(pool, "Name it", "Pick one of:\n{responses}", copies=3)
    assert out.success
    assert out.text == "ECHO: Pick one of:\n" + "\n---\n".join(["ECHO: Name it"] * 3)


async def test_broadcast_and_reduce_reduces_even_one_answer(pool: VLLMPool) -> None:
    out = await broadcast_and_reduce(pool, "solo", "Check: {responses}", copies=1)
    assert out.text == "ECHO: Check: ECHO: solo"


async def test_broadcast_and_reduce_separate_reducer_and_tokens(
    pool: VLLMPool, fleet: FakeFleet
) -> None:
    out = await broadcast_and_reduce(pool, "a b c d", "R {responses}", max_tokens=2,
                                     reduce_max_tokens=100, reducer=pool.select([1]))
    assert out.endpoint == fleet.endpoints[1]
    assert out.text == "ECHO: R " + "\n---\n".join(["ECHO: a"] * 4)


async def test_broadcast_and_reduce_leaves_out_failed_and_empty_answers() -> None:
    answers = iter(["A", "", "B", "C"])
    double = ScriptedPool(size=4, answer=lambda p: next(answers) if p == "q" else "ECHO: " + p)
    out = await broadcast_and_reduce(double, "q", "[{responses}]", separator="|")
    assert out.text == "ECHO: [A|B|C]"  # the empty answer is left out
    assert double.calls[1] == (["[A|B|C]"], None)


async def test_broadcast_and_reduce_failed_merge_is_the_result() -> None:
    double = ScriptedPool(answer=lambda p: "FAIL" if p == "q" else "ECHO: " + p)
    out = await broadcast_and_reduce(double, "q", "{responses}")
    assert not out.success and isinstance(out.exception, NoAnswerError)
    assert "level 1 (1 failed" in (out.error or "")


async def test_broadcast_and_reduce_everything_failing() -> None:
    async with fleet_of(2, model=MODEL, behaviors=[EndpointBehavior(die_after=0)] * 2) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport) as pool:
            out = await broadcast_and_reduce(pool, "x", "merge {responses}")
    assert not out.success and isinstance(out.exception, NoAnswerError)
    assert "2 failed" in (out.error or "")


async def test_broadcast_and_reduce_with_503s() -> None:
    async with fleet_of(2, model=MODEL,
                         behaviors=[EndpointBehavior(script=("503",))] * 2) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport) as flaky:
            out = await broadcast_and_reduce(flaky, "x", "merge {responses}")
    assert out.success and out.text.count("ECHO: x") == 2


@pytest.mark.parametrize("copies", [-1, 1.5, True])
async def test_bad_copies(copies: object) -> None:
    with pytest.raises(ConfigurationError, match="copies"):
        await broadcast(ScriptedPool(), "x", copies=copies)  # type: ignore[arg-type]


async def test_reduce_prompt_needs_responses() -> None:
    with pytest.raises(ConfigurationError, match="responses"):
        await broadcast_and_reduce(ScriptedPool(), "x", "no placeholder")
