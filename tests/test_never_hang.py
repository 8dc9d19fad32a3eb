"""Whatever the servers answer, a call ends within a bound read off the pool's settings."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aurora_swarm import (
    ConfigurationError,
    HealthPolicy,
    RequestError,
    RequestTimeout,
    RetryPolicy,
    Timeouts,
    VLLMPool,
)
from aurora_swarm.testing import EndpointBehavior, FakeClock, FakeFleet, expected_answer

from .conftest import MODEL

RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, max_retry_after=0.05)
HEALTH = HealthPolicy(failure_threshold=2, cooldown=0.05, max_cooldown=0.2, probe_timeout=0.3)
TIMEOUTS = Timeouts(connect=1.0, request=0.3, per_prompt=0.01)
PROMPTS = [f"prompt {k}" for k in range(20)]
SLACK = 5.0  # seconds for a loaded test machine

# Each test runs on the in-process fleet (the unit suite: what every prompt's result says) and on
# loopback servers (an integration test, which also checks the bound on wall-clock time).
WHERE = pytest.mark.parametrize("in_process", [
    pytest.param(True, id="in-process"),
    pytest.param(False, id="loopback", marks=pytest.mark.integration),
])


def fleet_for(n: int, behaviors: list[EndpointBehavior] | None, in_process: bool,
              *, fake_clock: bool = True) -> FakeFleet:
    """``n`` endpoints in-process (on a fake clock, unless the test needs real time), or on
    loopback ports."""
    if not in_process:
        return FakeFleet(n, model=MODEL, behaviors=behaviors)
    return FakeFleet(n, model=MODEL, behaviors=behaviors, in_process=True,
                     clock=FakeClock() if fake_clock else None)


def pool_on(fleet: FakeFleet, **options: Any) -> VLLMPool:
    transport = fleet.transport if fleet.in_process else None
    return VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, transport=transport, **options)


def bound(prompts: int) -> float:
    """Each prompt rides at most max_attempts requests, each within its timeout, with at most
    the longest rest (backoff, Retry-After or a bench's cooldown and probe) between them."""
    rest = max(RETRY.max_backoff, RETRY.max_retry_after, HEALTH.max_cooldown + HEALTH.probe_timeout)
    chunk = TIMEOUTS.for_chunk(prompts)
    assert chunk is not None
    return RETRY.max_attempts * (chunk + rest)


# Every way a server can refuse or fail a request, and what the failed prompts' errors say.
SHAPES = {
    **{status: f"HTTP {status}" for status in
       ("400", "401", "403", "404", "405", "413", "422", "429", "500", "503")},
    "hang": "timeout",
    "drop": "connection failed",
    "badjson": "unreadable answer",
    "partial": "no choice with index",
    "dup": "index",  # "no choice with index k" or "index k appears more than once"
    "die": "",
}


@WHERE
@pytest.mark.parametrize("action", sorted(SHAPES))
async def test_every_refusal_shape_ends_within_the_bound(action: str, in_process: bool) -> None:
    behavior = EndpointBehavior(default_action=action)
    async with fleet_for(2, [behavior] * 2, in_process) as fleet:
        async with pool_on(fleet, retry=RETRY, health=HEALTH, timeout=TIMEOUTS) as pool:
            began = time.perf_counter()
            out = await pool.send_all_batched(PROMPTS)
            elapsed = time.perf_counter() - began
    if not in_process:
        assert elapsed < bound(len(PROMPTS)) + SLACK
    assert len(out) == len(PROMPTS)
    for prompt, response in zip(PROMPTS, out, strict=True):
        if response.success:
            assert response.text == expected_answer(prompt, 8)[0]
            continue
        assert isinstance(response.exception, RequestError)
        assert SHAPES[action] in (response.error or "")
    if action not in ("partial", "dup"):  # those answer all but some prompts of a request
        assert not any(r.success for r in out)


@WHERE
@pytest.mark.parametrize("action", ["hang", "503", "400"])
async def test_every_refusal_shape_ends_on_string_only_servers(
    action: str, in_process: bool
) -> None:
    # One prompt a request: the fallback sends singles; the same bound holds.
    behavior = EndpointBehavior(list_prompts=False, vllm_extras=False,
                                script=("ok",) * 3, default_action=action)
    async with fleet_for(2, [behavior] * 2, in_process) as fleet:
        async with pool_on(fleet, retry=RETRY, health=HEALTH, timeout=TIMEOUTS) as pool:
            began = time.perf_counter()
            out = await pool.send_all_batched(PROMPTS)
            elapsed = time.perf_counter() - began
    if not in_process:
        assert elapsed < bound(len(PROMPTS)) + SLACK
    assert all(r.success or r.error for r in out)
    assert any(not r.success for r in out)


@WHERE
async def test_deadline_ends_a_call_whose_servers_never_answer(in_process: bool) -> None:
    hang = EndpointBehavior(default_action="hang")
    # The deadline is the pool's, in real time: the servers hang in real time too.
    async with fleet_for(2, [hang] * 2, in_process, fake_clock=False) as fleet:
        async with pool_on(fleet, deadline=0.5) as pool:
            seen: list[int] = []
            began = time.perf_counter()
            out = await pool.send_all_batched(PROMPTS, on_result=lambda k, r: seen.append(k))
            batched = time.perf_counter() - began
            began = time.perf_counter()
            single = await pool.send_all(PROMPTS[:4], deadline=0.3)
            singles = time.perf_counter() - began
    if not in_process:
        assert batched < 0.5 + SLACK and singles < 0.3 + SLACK
    for response in out + single:
        assert not response.success and isinstance(response.exception, RequestTimeout)
        assert "deadline" in (response.error or "")
    assert sorted(seen) == list(range(len(PROMPTS)))
    assert [r.agent_index for r in single] == [0, 1, 0, 1]


async def test_deadline_leaves_a_fast_call_alone() -> None:
    async with fleet_for(2, None, True) as fleet, pool_on(fleet, deadline=30) as pool:
            out = await pool.send_all_batched(PROMPTS)
    assert all(r.success for r in out)


@pytest.mark.parametrize("value", [0, -1, float("inf"), "5", True])
def test_deadline_is_checked(value: object) -> None:
    with pytest.raises(ConfigurationError, match="deadline"):
        VLLMPool(["h:1"], model=MODEL, deadline=value)  # type: ignore[arg-type]
