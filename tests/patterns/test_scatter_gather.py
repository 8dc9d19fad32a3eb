"""scatter_gather and map_gather on the fake fleet."""

from __future__ import annotations

import pytest

from aurora_swarm import ConfigurationError, Response, VLLMPool
from aurora_swarm.patterns import map_gather, scatter_gather
from aurora_swarm.testing import EndpointBehavior, FakeFleet, expected_answer

from .conftest import MODEL, ScriptedPool, fleet_of, open_pool


async def test_scatter_gather_answers_in_input_order_with_few_requests(
    pool: VLLMPool, fleet: FakeFleet
) -> None:
    prompts = [f"question {i}" for i in range(200)]
    out = await scatter_gather(pool, prompts)
    assert [r.text for r in out] == [f"ECHO: question {i}" for i in range(200)]
    assert fleet.total_requests() < 50  # batched, not 200 requests
    assert fleet.counters(0).chat_requests == 0


async def test_scatter_gather_without_batching_is_one_request_each(fleet: FakeFleet) -> None:
    async with open_pool(fleet.endpoints, transport=fleet.transport, use_batch=False) as pool:
        out = await scatter_gather(pool, ["a", "b", "c"], max_tokens=8)
    assert [r.text for r in out] == ["ECHO: a", "ECHO: b", "ECHO: c"]
    assert fleet.total_requests() == 3


async def test_scatter_gather_max_tokens(pool: VLLMPool) -> None:
    out = await scatter_gather(pool, ["one two three four"], max_tokens=2)
    assert (out[0].text, out[0].finish_reason) == expected_answer("one two three four", 2)


async def test_scatter_gather_empty_input(pool: VLLMPool, fleet: FakeFleet) -> None:
    assert await scatter_gather(pool, []) == []
    assert await map_gather(pool, [], "x {item}") == []
    assert fleet.total_requests() == 0


async def test_map_gather_fills_the_template(pool: VLLMPool) -> None:
    out = await map_gather(pool, ["BRCA1", 17, Response(success=True, text="TP53")],
                           "Summarize {item} please")
    assert [r.text for r in out] == [
        "ECHO: Summarize BRCA1 please", "ECHO: Summarize 17 please", "ECHO: Summarize TP53 please"]


async def test_map_gather_braces_in_items_are_safe(pool: VLLMPool) -> None:
    items = ['{"a": 1}', "{}", "{item}", "set {1, 2}"]
    out = await map_gather(pool, items, 'Parse {item} -> {"schema": "x"}')
    assert [r.text for r in out] == [f'ECHO: Parse {i} -> {{"schema": "x"}}' for i in items]


async def test_map_gather_passes_failed_items_through_without_a_request() -> None:
    pool = ScriptedPool()
    failed = Response(success=False, error="earlier step failed")
    out = await map_gather(pool, ["a", failed, "b"], "do {item}")
    assert out[1] is failed
    assert [r.text for r in (out[0], out[2])] == ["ECHO: do a", "ECHO: do b"]
    assert pool.calls == [(["do a", "do b"], None)]


async def test_map_gather_custom_placeholder() -> None:
    pool = ScriptedPool()
    out = await map_gather(pool, ["x"], "<<{gene}>> {item}", placeholder="gene")
    assert out[0].text == "ECHO: <<x>> {item}"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: map_gather(p, ["a"], "no placeholder"), "placeholder"),
        (lambda p: scatter_gather(p, "one string"), "not one string"),
        (lambda p: scatter_gather(p, ["a"], max_tokens=0), "max_tokens"),
    ],
)
async def test_bad_arguments(call: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await call(ScriptedPool())  # type: ignore[operator]


async def test_dead_endpoint_and_503_script_lose_nothing() -> None:
    behaviors = {0: EndpointBehavior(die_after=0), 3: EndpointBehavior(script=("503", "503"))}
    async with fleet_of(4, model=MODEL, behaviors=behaviors) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport) as pool:
            out = await map_gather(pool, range(100), "item {item}")
    assert [r.text for r in out] == [f"ECHO: item {i}" for i in range(100)]
    assert all(r.endpoint != fleet.endpoints[0] for r in out)


async def test_every_endpoint_dead_gives_failed_responses_not_exceptions() -> None:
    async with fleet_of(2, model=MODEL, behaviors=[EndpointBehavior(die_after=0)] * 2) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport) as pool:
            out = await scatter_gather(pool, ["a", "b", "c"])
    assert len(out) == 3 and not any(r.success for r in out)
    assert all(r.exception is not None for r in out)
