"""Random fault schedules on an in-process fleet: nothing lost, nothing answered twice, nothing
mislabelled. The same properties as the loopback ones, at a thousand examples each: the mock
transport costs no sockets and a fake clock costs no modelled time."""

from __future__ import annotations

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aurora_swarm import Chunking, HealthPolicy, RetryPolicy, VLLMPool
from aurora_swarm.testing import EndpointBehavior, FakeClock, FakeFleet, expected_answer

from .conftest import MODEL, property_examples

# Rest, bench and probe as the real policies do, in a thousandth of the time.
TINY_RETRY_WAIT = {"initial_backoff": 0.0001, "max_backoff": 0.001}
TINY_HEALTH = HealthPolicy(failure_threshold=3, cooldown=0.0005, max_cooldown=0.002,
                           probe_timeout=1)
ACTIONS = ["ok", "ok", "shuffle", "500", "503", "429", "drop", "partial", "dup", "badjson",
           "hang"]


def check_all_correct(prompts: list[str], out: list, max_tokens: int = 64) -> None:
    assert len(out) == len(prompts)
    for index, (prompt, response) in enumerate(zip(prompts, out, strict=True)):
        assert response.success, (index, response.error)
        assert response.text == expected_answer(prompt, max_tokens)[0], index


@settings(max_examples=property_examples(1000), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    n_prompts=st.integers(min_value=0, max_value=300),
    scripts=st.lists(st.lists(st.sampled_from(ACTIONS), max_size=8), min_size=1, max_size=5),
    chunk=st.one_of(st.none(), st.integers(min_value=1, max_value=64)),
)
def test_random_fault_schedules_lose_and_mislabel_nothing(
    n_prompts: int, scripts: list[list[str]], chunk: int | None
) -> None:
    prompts = [f"prompt {i} " + "z " * (i % 5) for i in range(n_prompts)]

    async def scenario() -> None:
        behaviors = [EndpointBehavior(script=tuple(s), retry_after=0) for s in scripts]
        retry = RetryPolicy(max_attempts=len(scripts) * 8 + 8, **TINY_RETRY_WAIT)
        async with FakeFleet(len(scripts), behaviors=behaviors, in_process=True,
                             clock=FakeClock()) as fleet:
            async with VLLMPool(fleet.endpoints, model=MODEL, retry=retry, health=TINY_HEALTH,
                                chunking=Chunking(chunk_size=chunk), timeout=30.0,
                                transport=fleet.transport) as pool:
                settled: list[int] = []
                out = await pool.send_all_batched(prompts,
                                                  on_result=lambda i, r: settled.append(i))
        assert sorted(settled) == list(range(n_prompts))  # none lost, none settled twice
        check_all_correct(prompts, out)  # scripts run out, so every prompt gets answered
        assert fleet.totals().faults == _injected(scripts, fleet)

    anyio.run(scenario)


def _injected(scripts: list[list[str]], fleet: FakeFleet) -> dict[str, int]:
    """The faults each endpoint's script held for the requests it got."""
    seen: dict[str, int] = {}
    for k, script in enumerate(scripts):
        for action in script[: fleet.counters(k).inference_requests]:
            if action != "ok":
                seen[action] = seen.get(action, 0) + 1
    return seen


@settings(max_examples=property_examples(1000), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=st.lists(st.text(min_size=1, max_size=30).filter(lambda s: s.strip()), max_size=120),
    n_endpoints=st.integers(min_value=1, max_value=6),
)
def test_every_output_answers_its_own_input(prompts: list[str], n_endpoints: int) -> None:
    """Random prompts, random endpoint counts, servers returning choices in random order."""

    async def scenario() -> None:
        behaviors = [EndpointBehavior(shuffle_choices=True)] * n_endpoints
        async with FakeFleet(n_endpoints, behaviors=behaviors, in_process=True) as fleet:
            async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=64,
                                transport=fleet.transport) as pool:
                out = await pool.send_all_batched(prompts)
                single = await pool.post_batch(n_endpoints - 1, prompts) if prompts else []
        check_all_correct(prompts, out)
        check_all_correct(prompts, single)

    anyio.run(scenario)
