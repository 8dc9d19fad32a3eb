"""Servers that are not vLLM: capabilities learnt once, one prompt a request where lists fail."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from aurora_swarm import (
    Capabilities,
    Endpoint,
    HealthPolicy,
    HTTPStatusError,
    VLLMPool,
    parse_hostfile,
)
from aurora_swarm.testing import EndpointBehavior, expected_answer

from .conftest import FAST_RETRY, MODEL, fleet_of

STRINGS_ONLY = EndpointBehavior(list_prompts=False, vllm_extras=False)


async def test_fake_endpoint_modes_answer_like_servers_that_are_not_vllm() -> None:
    behaviors = [STRINGS_ONLY, EndpointBehavior(list_prompts=False, list_prompt_status=422)]
    async with fleet_of(2, model=MODEL, behaviors=behaviors) as fleet:
        async with httpx2.AsyncClient(transport=fleet.transport) as http:
            plain, strict = (e.url for e in fleet.endpoints)
            listed = await http.post(plain + "/v1/completions",
                                     json={"model": MODEL, "prompt": ["a", "b"]})
            single = await http.post(plain + "/v1/completions",
                                     json={"model": MODEL, "prompt": "a", "max_tokens": 8})
            refused_422 = await http.post(strict + "/v1/completions",
                                          json={"model": MODEL, "prompt": ["a"]})
            health = await http.get(plain + "/health")
            models = (await http.get(plain + "/v1/models")).json()
            vllm_models = (await http.get(strict + "/v1/models")).json()
    assert listed.status_code == 400 and "string prompt" in listed.json()["error"]["message"]
    assert single.status_code == 200 and single.json()["choices"][0]["text"] == "ECHO: a"
    assert refused_422.status_code == 422
    assert health.status_code == 404
    assert "max_model_len" not in models["data"][0]
    assert vllm_models["data"][0]["max_model_len"] == 4096
    assert fleet.counters(0).rejected == 1 and fleet.counters(0).prompts_received == 1


async def test_string_only_fleet_answers_every_prompt_one_a_request() -> None:
    prompts = [f"question {k} " + "w " * (k % 7) for k in range(400)]
    async with fleet_of(4, model=MODEL, behaviors=[STRINGS_ONLY] * 4) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=32,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched(prompts)
            stats = pool.stats()
            capabilities = pool.capabilities()
    assert [r.text for r in out] == [expected_answer(p, 32)[0] for p in prompts]
    assert all(c.list_prompts is False for c in capabilities.values())
    assert all(e.capabilities == capabilities[e.endpoint] for e in stats.endpoints)
    # No /metrics there: asked at most once an endpoint, then never again.
    assert all(c.metrics is not True for c in capabilities.values())
    assert all(fleet.counters(k).requests.get("other", 0) <= 1 for k in range(4))
    # Every request the servers accepted carried one prompt; the lists they refused are the
    # pool's batched requests (those in flight before the endpoint was known, and the list of
    # one that confirmed it), a few an endpoint.
    totals = fleet.totals()
    assert totals.completion_requests - totals.rejected == totals.prompts_received >= 400
    assert stats.answered == 400 and stats.single_requests >= 400
    assert totals.rejected <= stats.batch_requests <= 4 * 8


async def test_mixed_fleet_batches_where_it_can_and_sends_singles_elsewhere() -> None:
    behaviors = [EndpointBehavior(), STRINGS_ONLY, EndpointBehavior(), STRINGS_ONLY]
    prompts = [f"item {k}" for k in range(4000)]
    async with fleet_of(4, model=MODEL, behaviors=behaviors) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=16,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched(prompts)
            stats = pool.stats()
        counters = [fleet.counters(k) for k in range(4)]
    assert [r.text for r in out] == [expected_answer(p, 16)[0] for p in prompts]
    lists, singles = (stats.endpoints[0], stats.endpoints[2]), (stats.endpoints[1],
                                                               stats.endpoints[3])
    for row, seen in zip(lists, (counters[0], counters[2]), strict=True):
        assert row.capabilities is not None and row.capabilities.list_prompts is True
        # (a request taken back before it was sent counts here, not at the server)
        assert row.single_requests == 0 and row.batch_requests >= seen.completion_requests
        assert seen.prompts_received > 10 * seen.completion_requests  # batched
    for row, seen in zip(singles, (counters[1], counters[3]), strict=True):
        assert row.capabilities is not None and row.capabilities.list_prompts is False
        # One prompt a request, apart from the refused lists that told the pool so.
        assert seen.completion_requests - seen.rejected == seen.prompts_received >= row.answered
        assert row.single_requests >= row.answered  # (its work may all be taken back)
        assert row.single_requests > 0
        assert seen.rejected <= row.batch_requests <= 8
    assert sum(c.prompts_received for c in counters) >= 4000  # taken-back prompts go again


@pytest.mark.parametrize("status", [400, 404, 405, 422])
async def test_every_refusal_of_lists_falls_back(status: int) -> None:
    behavior = EndpointBehavior(list_prompts=False, list_prompt_status=status)
    async with fleet_of(2, model=MODEL, behaviors=[behavior] * 2) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched([f"p {k}" for k in range(50)])
    assert all(r.success for r in out)
    assert [r.text for r in out] == [f"ECHO: p {k}" for k in range(50)]


async def test_a_bad_prompt_on_a_string_only_endpoint_fails_alone_naming_the_cause() -> None:
    prompts = ["fine one", "word " * 5000, "fine two"]  # the middle one exceeds the context
    async with fleet_of(1, model=MODEL, behaviors=[STRINGS_ONLY]) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=FAST_RETRY,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched(prompts)
    assert [r.success for r in out] == [True, False, True]
    error = out[1].exception
    assert isinstance(error, HTTPStatusError) and error.status_code == 400
    assert error.cause == "HTTP 400" and not error.retryable
    assert "maximum context length" in str(out[1].error)
    assert out[1].attempts == 1  # a refused prompt is not sent again
    assert fleet.counters(0).prompts_received == 3


async def test_detection_costs_no_request_on_vllm() -> None:
    async with fleet_of(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            assert set(pool.capabilities().values()) == {Capabilities()}  # nothing known yet
            await pool.send_all_batched([f"p {k}" for k in range(64)])
            capabilities = pool.capabilities()
        totals = fleet.totals()
    assert all(c.list_prompts is True for c in capabilities.values())
    assert totals.prompts_received == 64 and totals.rejected == 0
    # Nothing beyond what is sent anyway: the completions, one /v1/models for sizing, and the
    # dispatcher's own readings of /metrics.
    assert set(totals.requests) <= {"/v1/completions", "/v1/models", "/metrics"}
    assert totals.requests["/v1/models"] == 1


async def test_a_bad_first_prompt_on_vllm_is_a_bad_prompt_not_a_missing_feature() -> None:
    prompts = ["word " * 5000, "fine"]
    async with fleet_of(1, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=FAST_RETRY,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched(prompts, max_tokens=8)  # no sizing: vLLM refuses
            capabilities = pool.capabilities()[fleet.endpoints[0]]
    assert [r.success for r in out] == [False, True]
    assert isinstance(out[0].exception, HTTPStatusError)
    assert capabilities.list_prompts is not False


async def test_endpoint_without_health_route_is_probed_with_models() -> None:
    flaky = EndpointBehavior(vllm_extras=False, script=("503",) * 3)
    async with fleet_of(2, model=MODEL, behaviors=[flaky, STRINGS_ONLY]) as fleet:
        async with VLLMPool(
            fleet.endpoints[:1], model=MODEL, max_tokens=8, retry=FAST_RETRY,
            health=HealthPolicy(failure_threshold=3, cooldown=0.01), transport=fleet.transport,
        ) as pool:
            out = await pool.send_all_batched([f"p {k}" for k in range(8)])
            capabilities = pool.capabilities()[fleet.endpoints[0]]
        seen = fleet.counters(0)
    assert all(r.success for r in out)
    assert capabilities.health_route is False
    assert seen.requests.get("/v1/models", 0) >= 1


async def test_fallback_concurrency_is_checked() -> None:
    with pytest.raises(ValueError, match="fallback_concurrency"):
        VLLMPool(["h:1"], model=MODEL, fallback_concurrency=0)


@pytest.mark.parametrize("probe", ["completion", "models"])
async def test_health_probe_can_be_a_one_token_completion_or_models(probe: str) -> None:
    flaky = EndpointBehavior(script=("503", "503"))
    async with fleet_of(1, model=MODEL, behaviors=[flaky]) as fleet:
        async with VLLMPool(
            fleet.endpoints, model=MODEL, max_tokens=8, retry=FAST_RETRY,
            health=HealthPolicy(failure_threshold=2, cooldown=0.01, probe=probe),
            transport=fleet.transport,
        ) as pool:
            out = await pool.send_all_batched([f"p {k}" for k in range(4)])
        seen = fleet.counters(0)
    assert all(r.success for r in out)
    assert seen.requests.get("/health", 0) == 0
    if probe == "completion":
        assert seen.prompts_received >= 4 + 2 + 1  # the prompts, twice refused, one "ping"
    else:
        assert seen.requests["/v1/models"] >= 2  # sizing, then the probe


def test_health_probe_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="probe"):
        HealthPolicy(probe="ping")


async def test_wait_counts_a_server_without_health_route_as_up(tmp_path: Path) -> None:
    from aurora_swarm._cli_wait import probe_all, write_hostfile
    from aurora_swarm._transport import Transport

    async with fleet_of(2, model=MODEL, behaviors=[STRINGS_ONLY, EndpointBehavior()]) as fleet:
        transport = Transport(api_key="EMPTY", connect_timeout=5.0, max_connections=4,
                              http_transport=fleet.transport)
        try:
            healthy = await probe_all(transport, fleet.endpoints, 5.0)
        finally:
            await transport.aclose()
    assert healthy == fleet.endpoints
    gateway = Endpoint.parse("https://gw.example.org/site/llm/v1", {"api_key_env": "K"})
    write_hostfile(tmp_path / "ready", [gateway, *healthy], "test")
    assert parse_hostfile(tmp_path / "ready") == [gateway, *healthy]


async def test_a_passing_refusal_of_a_list_does_not_make_an_endpoint_string_only() -> None:
    # The first list is refused once (a passing fault): the string and the list of one that
    # follow are answered, so the endpoint still takes lists and the refusal stands.
    async with fleet_of(1, model=MODEL, behaviors=[EndpointBehavior(script=("400",))]) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=FAST_RETRY,
                            transport=fleet.transport) as pool:
            first = await pool.post_batch(0, ["a", "b"])
            later = await pool.send_all_batched([f"p {k}" for k in range(20)])
            capabilities = pool.capabilities()[fleet.endpoints[0]]
    assert [r.success for r in first] == [False, False]
    assert all(r.success for r in later)
    assert capabilities.list_prompts is True
