"""Code written for the earlier Aurora-Swarm: its module paths, keywords, env vars and shapes."""

from __future__ import annotations

import pytest

from aurora_swarm import AgentPool, ConfigurationError, Response, Timeouts, VLLMPool
from aurora_swarm.aggregators import (
    best_of,
    concat,
    failure_report,
    majority_vote,
    statistics,
    structured_merge,
    top_k,
)
from aurora_swarm.hostfile import AgentEndpoint
from aurora_swarm.patterns.blackboard import Blackboard
from aurora_swarm.patterns.broadcast import broadcast_and_reduce
from aurora_swarm.pool import AgentPool as EarlierAgentPool
from aurora_swarm.testing import EndpointBehavior, FakeFleet
from aurora_swarm.vllm_pool import VLLMPool as EarlierVLLMPool

from .conftest import fleet_of


def ok(text: str, agent: int = 0) -> Response:
    return Response(success=True, text=text, agent_index=agent)


FAILED = Response(success=False, error="boom", agent_index=3)


def test_earlier_module_paths_name_our_objects() -> None:
    assert EarlierAgentPool is AgentPool and EarlierVLLMPool is VLLMPool


def test_earlier_pool_keywords_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_TOKENS", "MAX_TOKENS_AGGREGATION", "MODEL_MAX_CONTEXT",
                 "TIMEOUT_PER_SEQUENCE"):
        monkeypatch.delenv(f"AURORA_SWARM_{name}", raising=False)
    pool = VLLMPool([("host1", 8000)])
    assert pool.model == "openai/gpt-oss-120b" and pool.endpoints[0] == AgentEndpoint("host1", 8000)
    limits = (pool.max_tokens, pool.max_tokens_aggregation, pool.model_max_context)
    assert limits == (512, 1024, None)
    pool = VLLMPool([AgentEndpoint("h", 1)], max_tokens=1024, max_tokens_aggregation=2048,
                    model_max_context=131072, buffer=256, concurrency=16, connector_limit=32,
                    timeout=600.0, use_batch=True, batch_concurrency=100,
                    timeout_per_sequence=50.0, batch_timeout_cap=900.0)
    assert (pool.max_tokens, pool.max_tokens_aggregation) == (1024, 2048)
    assert (pool.model_max_context, pool.buffer) == (131072, 256)
    timeouts = pool._core.settings.timeouts
    assert isinstance(timeouts, Timeouts) and timeouts.per_prompt == 0.5
    assert timeouts.for_chunk(10_000) == 900.0 and timeouts.for_chunk(1) == 600.5
    assert pool.select([0]).max_tokens_aggregation == 2048
    # batch_concurrency is the earlier name of vLLM's --max-num-seqs too
    assert pool.stats().endpoints[0].slots == 100
    assert pool.stats().endpoints[0].slots_source == "option"


def test_environment_is_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AURORA_SWARM_MAX_TOKENS", "2048")
    monkeypatch.setenv("AURORA_SWARM_MODEL_MAX_CONTEXT", "200000")
    monkeypatch.delenv("AURORA_SWARM_MAX_TOKENS_AGGREGATION", raising=False)
    pool = VLLMPool(["h:1"])
    assert (pool.max_tokens, pool.max_tokens_aggregation, pool.model_max_context) == (
        2048, 4096, 200000)
    assert VLLMPool(["h:1"], max_tokens=100).max_tokens == 100
    monkeypatch.setenv("AURORA_SWARM_TIMEOUT_PER_SEQUENCE", "128")
    assert VLLMPool(["h:1"])._core.settings.timeouts.per_prompt == 0.5  # 128 s / 256 slots
    assert VLLMPool(["h:1"], timeout_per_sequence=64.0,
                    batch_concurrency=64)._core.settings.timeouts.per_prompt == 1.0
    monkeypatch.setenv("AURORA_SWARM_MAX_TOKENS", "lots")
    with pytest.raises(ConfigurationError, match=r"\$AURORA_SWARM_MAX_TOKENS='lots'"):
        VLLMPool(["h:1"])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"concurrency": 4, "max_concurrency": 8}, "not both"),
    ({"batch_concurrency": 4, "max_num_seqs": 8}, "not both"),
    ({"buffer": -1}, "buffer must be"),
    ({"model_max_context": 100, "buffer": 100}, "leaves no room"),
    ({"batch_timeout_cap": 0}, "batch_timeout_cap"),
    ({"connector_limit": 0}, "connector_limit"),
])
def test_bad_earlier_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        VLLMPool(["h:1"], **kwargs)  # type: ignore[arg-type]


def test_bad_tuple_endpoint() -> None:
    with pytest.raises(ConfigurationError, match=r"endpoints\[0\]: port '80' .* is not an int"):
        VLLMPool([("h", "80")])  # type: ignore[list-item]


def test_aggregators_unpack_and_index_like_the_earlier_ones() -> None:
    answers = [ok("yes"), ok("no", 1), ok("yes", 2), FAILED]
    winner, confidence = majority_vote(answers)
    assert (winner, confidence) == ("yes", 2 / 3)
    assert majority_vote([FAILED], include_failures=True).total == 1
    assert tuple(majority_vote([])) == ("", 0.0)
    assert concat(answers, separator="|") == "yes|no|yes"
    assert concat([ok("a"), FAILED], separator="|", include_failures=True) == "a|"
    assert best_of(answers, score_fn=lambda r: r.agent_index) is answers[2]
    assert [r.agent_index for r in top_k(answers, 2, score_fn=lambda r: r.agent_index)] == [2, 1]
    merged, errors = structured_merge([ok('[1, 2]'), ok('{"a": 1}'), ok("nope", 5), FAILED])
    assert merged == [1, 2, {"a": 1}]
    assert [e["agent_index"] for e in errors] == [5, 3]
    numbers = statistics([ok("4"), ok("8")])
    assert dict(numbers) == {"mean": 6.0, "std": numbers.stdev, "median": 6.0, "min": 4.0,
                             "max": 8.0}
    assert statistics([ok("x=3"), ok("x=5")], extract_fn=lambda r: float(r.text[2:]))["max"] == 5
    assert statistics([])["mean"] == 0.0
    report = failure_report([ok(""), FAILED])
    assert dict(report) == {"total": 2, "success_count": 1, "failure_count": 1,
                            "failures": [{"agent_index": 3, "error": "boom"}]}
    with pytest.raises(KeyError):
        report["nothing"]
    with pytest.raises(ConfigurationError, match="not both"):
        best_of(answers, lambda r: 0.0, score_fn=lambda r: 0.0)


# AgentPool has no in-process transport: loopback servers, and a connection refused by a real
# closed port (an integration test, left out of the unit suite by `-m "not integration"`).
@pytest.mark.integration
async def test_agent_pool_posts_to_generate_in_input_order() -> None:
    async with FakeFleet(3, behaviors={1: EndpointBehavior(script=("503",))}) as fleet:
        agents = [AgentEndpoint(e.host, e.port, {"role": "a" if k else "b"})
                  for k, e in enumerate(fleet.endpoints)]
        async with AgentPool(agents, concurrency=4) as pool:
            out = await pool.send_all_batched([f"p{i}" for i in range(7)])
            assert [(r.text, r.agent_index) for r in out] == [
                (f"ECHO: p{i}", i % 3) for i in range(7)]
            assert sum(r.attempts for r in out) == 8  # the 503 was retried
            assert [r.text for r in await pool.by_tag("role", "a").broadcast_prompt("q")] == [
                "ECHO: q"] * 2
            assert pool.by_tag("role", "zzz").size == 0 and pool.sample(9).size == 3
            assert (await pool.post(2, "x")).endpoint == agents[2]
            with pytest.raises(ConfigurationError, match="out of range"):
                await pool.post(3, "x")
        assert sum(fleet.counters(k).requests.get("/generate", 0) for k in range(3)) == 11
    async with AgentPool([("127.0.0.1", 9)], timeout=1.0) as dead:
        failed = await dead.post(0, "x")
    assert not failed.success and failed.exception is not None


async def test_blackboard_seeded_through_board_and_earlier_snapshot() -> None:
    async with FakeFleet(2) as fleet:
        agents = [AgentEndpoint(e.host, e.port, {"role": r})
                  for e, r in zip(fleet.endpoints, ["ideas", "critiques"], strict=True)]
        async with AgentPool(agents) as pool:
            board = Blackboard(["ideas", "critiques"],
                               lambda role, b: f"{role}: {' / '.join(b['ideas'])}")
            board.board["ideas"].append("seed")
            final = await board.run(pool, max_rounds=1)
    assert final["ideas"] == ["seed", "ECHO: ideas: seed"]
    assert board.snapshot()["round"] == 1 and board.snapshot()["board"] == final


async def test_reducer_agent_index_picks_the_merging_agent() -> None:
    async with fleet_of(3) as fleet, VLLMPool(fleet.endpoints, model=fleet.model,
                                             transport=fleet.transport) as pool:
        out = await broadcast_and_reduce(pool, "q", "merge {responses}", reducer_agent_index=2)
        assert out.success and out.agent_index == 0  # index within the one-agent reducer
        assert out.endpoint == fleet.endpoints[2]
        with pytest.raises(ConfigurationError, match="not both"):
            await broadcast_and_reduce(pool, "q", "{responses}", reducer=pool,
                                       reducer_agent_index=0)


async def test_openai_client_and_the_names_earlier_scripts_read() -> None:
    async with fleet_of(3) as fleet, VLLMPool(fleet.endpoints, model=fleet.model,
                                             max_tokens=100, buffer=8,
                                             transport=fleet.transport) as pool:
        sub = pool.slice(1, 3)
        client = sub.openai_client(1)
        assert str(client.base_url).rstrip("/") == fleet.endpoints[2].base_url
        assert [m.id for m in (await client.models.list()).data] == [fleet.model]
        with pytest.warns(DeprecationWarning, match=r"_openai_clients\[i\] is private; use "
                          r"VLLMPool.openai_client\(i\)"):
            assert sub._openai_clients[1] is client
        for name, value in [("model", fleet.model), ("max_tokens", 100),
                            ("max_tokens_aggregation", 200), ("buffer", 8),
                            ("model_max_context", None)]:
            message = f"_{name} is private; use VLLMPool.{name}$"
            with pytest.warns(DeprecationWarning, match=message):
                assert getattr(sub, f"_{name}") == value
        with pytest.raises(ConfigurationError, match="out of range"):
            sub.openai_client(2)
