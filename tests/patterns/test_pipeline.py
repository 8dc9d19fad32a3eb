"""run_pipeline, Stage and fan_out_fan_in on the fake fleet."""

from __future__ import annotations

import pytest

from aurora_swarm import ConfigurationError, Response, VLLMPool
from aurora_swarm.patterns import NoAnswerError, Stage, StageResult, fan_out_fan_in, run_pipeline
from aurora_swarm.testing import EndpointBehavior, FakeFleet

from .conftest import MODEL, ScriptedPool, fleet_of, open_pool


async def test_broadcast_stages_chain_their_outputs(pool: VLLMPool) -> None:
    stages = [Stage("draft", "Draft: {input}", n_agents=2),
              Stage("pick", "Pick from {input}", n_agents=1)]
    out = await run_pipeline(pool, stages, "topic")
    assert out == "ECHO: Pick from ECHO: Draft: topic\nECHO: Draft: topic"


async def test_scatter_stage_maps_and_keeps_order(pool: VLLMPool, fleet: FakeFleet) -> None:
    seen: list[StageResult] = []
    stages = [
        Stage("split", "List: {input}", output_transform=lambda rs: rs[0].text.split()[2:]),
        Stage("each", "Explain {input}", scatter=True),
        Stage("sum", "Summarize:\n{input}", n_agents=1),
    ]
    out = await run_pipeline(pool, stages, "a b c d e", on_stage=seen.append)
    assert [r.text for r in seen[1].output] == [f"ECHO: Explain {x}" for x in "abcde"]
    assert seen[1].prompts == tuple(f"Explain {x}" for x in "abcde")
    assert out == "ECHO: Summarize:\n" + "\n".join(f"ECHO: Explain {x}" for x in "abcde")
    assert [s.index for s in seen] == [0, 1, 2]


async def test_filter_and_transform(pool: VLLMPool) -> None:
    stages = [Stage("nums", "{input}", scatter=True,
                    output_filter=lambda r: int(r.text.split()[-1]) % 2 == 0,
                    output_transform=lambda rs: [r.text.split()[-1] for r in rs]),
              Stage("double", "twice {input}", scatter=True)]
    out = await run_pipeline(pool, stages, [str(i) for i in range(6)])
    assert [r.text for r in out] == ["ECHO: twice 0", "ECHO: twice 2", "ECHO: twice 4"]


async def test_braces_flow_through_stages(pool: VLLMPool) -> None:
    stages = [Stage("json", 'Emit {"k": {input}}', n_agents=1),
              Stage("again", "Check {input} {item}", n_agents=1)]
    out = await run_pipeline(pool, stages, "{input}")
    assert out == 'ECHO: Check ECHO: Emit {"k": {input}} {item}'


async def test_partitioned_stages_use_their_own_agents(fleet: FakeFleet) -> None:
    counts: list[list[int]] = []

    def record(_: StageResult) -> None:
        counts.append([fleet.counters(i).prompts_received for i in range(4)])

    stages = [Stage("first", "one {input}", n_agents=1), Stage("rest", "two {input}")]
    async with open_pool(fleet.endpoints, transport=fleet.transport) as pool:
        out = await run_pipeline(pool, stages, "x", reuse_agents=False, on_stage=record)
    assert counts[0] == [1, 0, 0, 0]  # stage 0 owns agent 0
    assert counts[1][0] == 1 and sum(counts[1][1:]) >= 3  # stage 1 owns agents 1..3
    assert out == "\n".join(["ECHO: two ECHO: one x"] * 3)


async def test_partition_needs_agents_and_slice(pool: VLLMPool) -> None:
    with pytest.raises(ConfigurationError, match="more agents"):
        await run_pipeline(pool, [Stage("a", "{input}", n_agents=3),
                                  Stage("b", "{input}", n_agents=2)], "x", reuse_agents=False)
    with pytest.raises(ConfigurationError, match="slice"):
        await run_pipeline(ScriptedPool(), [Stage("a", "{input}")], "x", reuse_agents=False)


async def test_failures_are_dropped_and_recorded() -> None:
    seen: list[StageResult] = []
    stages = [Stage("each", "do {input}", scatter=True), Stage("next", "then {input}",
                                                               scatter=True)]
    failed = Response(success=False, error="upstream")
    out = await run_pipeline(ScriptedPool(), stages, ["a", "FAIL", "EMPTY", failed, "b"],
                             on_stage=seen.append)
    assert [r.text for r in out] == ["ECHO: then ECHO: do a", "ECHO: then ECHO: do b"]
    assert [(d.level, d.index, d.reason) for d in seen[0].dropped] == [
        (0, 1, "failed"), (0, 2, "empty"), (0, 3, "failed")]
    assert seen[0].responses[3] is failed and seen[0].prompts[3] == ""


async def test_dead_endpoint_and_503s_in_a_pipeline() -> None:
    behaviors = {0: EndpointBehavior(die_after=0), 2: EndpointBehavior(script=("503",) * 3)}
    async with fleet_of(4, model=MODEL, behaviors=behaviors) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport) as pool:
            out = await run_pipeline(pool, [Stage("s", "{input}!", scatter=True)],
                                     [str(i) for i in range(50)])
    assert [r.text for r in out] == [f"ECHO: {i}!" for i in range(50)]


async def test_empty_input_sends_nothing(pool: VLLMPool, fleet: FakeFleet) -> None:
    out = await run_pipeline(pool, [Stage("s", "{input}", scatter=True)], [])
    assert out == [] and fleet.total_requests() == 0
    assert await run_pipeline(pool, [], "unchanged") == "unchanged"


def test_stage_validation() -> None:
    with pytest.raises(ConfigurationError, match="input"):
        Stage("s", "no placeholder")
    with pytest.raises(ConfigurationError, match="n_agents"):
        Stage("s", "{input}", n_agents=0)
    with pytest.raises(ConfigurationError, match="max_tokens"):
        Stage("s", "{input}", max_tokens=0)


async def test_stage_max_tokens(pool: VLLMPool) -> None:
    out = await run_pipeline(pool, [Stage("s", "{input} b c d", n_agents=1, max_tokens=2)], "a")
    assert out == "ECHO: a"


# -- fan_out_fan_in ------------------------------------------------------------------------------


async def test_fan_out_fan_in_one_prompt(pool: VLLMPool) -> None:
    out = await fan_out_fan_in(pool, "idea", "Collect:\n{responses}", n_workers=3)
    assert out.text == "ECHO: Collect:\n" + "\n---\n".join(["ECHO: idea"] * 3)


async def test_fan_out_fan_in_many_prompts(pool: VLLMPool, fleet: FakeFleet) -> None:
    prompts = [f"review section {i}" for i in range(20)]
    out = await fan_out_fan_in(pool, prompts, "Report {responses}", collector=pool.select([0]),
                               max_tokens=3, collect_max_tokens=1000)
    assert out.endpoint == fleet.endpoints[0]
    assert out.text == "ECHO: Report " + "\n---\n".join(["ECHO: review section"] * 20)


async def test_fan_out_fan_in_failures() -> None:
    out = await fan_out_fan_in(ScriptedPool(), ["a", "FAIL"], "{responses}")
    assert out.text == "ECHO: ECHO: a"
    out = await fan_out_fan_in(ScriptedPool(), ["FAIL", "EMPTY"], "{responses}")
    assert isinstance(out.exception, NoAnswerError) and "1 failed, 1 empty" in (out.error or "")
    out = await fan_out_fan_in(ScriptedPool(), [], "{responses}")
    assert isinstance(out.exception, NoAnswerError) and "nothing to reduce" in (out.error or "")


async def test_fan_out_fan_in_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="responses"):
        await fan_out_fan_in(ScriptedPool(), "x", "no placeholder")
    with pytest.raises(ConfigurationError, match="n_workers"):
        await fan_out_fan_in(ScriptedPool(), ["x"], "{responses}", n_workers=2)
    with pytest.raises(ConfigurationError, match="n_workers"):
        await fan_out_fan_in(ScriptedPool(), "x", "{responses}", n_workers=0)
