"""Whatever the servers answer, a call ends within a bound read off the pool's settings."""

from __future__ import annotations

import time

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
from aurora_swarm.testing import EndpointBehavior, FakeFleet, expected_answer

from .conftest import MODEL

RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, max_retry_after=0.05)
HEALTH = HealthPolicy(failure_threshold=2, cooldown=0.05, max_cooldown=0.2, probe_timeout=0.3)
TIMEOUTS = Timeouts(connect=1.0, request=0.3, per_prompt=0.01)
PROMPTS = [f"prompt {k}" for k in range(20)]
SLACK = 5.0  # seconds for a loaded test machine


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


@pytest.mark.parametrize("action", sorted(SHAPES))
async def test_every_refusal_shape_ends_within_the_bound(action: str) -> None:
    behavior = EndpointBehavior(default_action=action)
    async with FakeFleet(2, model=MODEL, behaviors=[behavior] * 2) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=RETRY,
                            health=HEALTH, timeout=TIMEOUTS) as pool:
            began = time.perf_counter()
            out = await pool.send_all_batched(PROMPTS)
            elapsed = time.perf_counter() - began
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


@pytest.mark.parametrize("action", ["hang", "503", "400"])
async def test_every_refusal_shape_ends_on_string_only_servers(action: str) -> None:
    # One prompt a request: the fallback sends singles; the same bound holds.
    behavior = EndpointBehavior(list_prompts=False, vllm_extras=False,
                                script=("ok",) * 3, default_action=action)
    async with FakeFleet(2, model=MODEL, behaviors=[behavior] * 2) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=RETRY,
                            health=HEALTH, timeout=TIMEOUTS) as pool:
            began = time.perf_counter()
            out = await pool.send_all_batched(PROMPTS)
            elapsed = time.perf_counter() - began
    assert elapsed < bound(len(PROMPTS)) + SLACK
    assert all(r.success or r.error for r in out)
    assert any(not r.success for r in out)


async def test_deadline_ends_a_call_whose_servers_never_answer() -> None:
    hang = EndpointBehavior(default_action="hang")
    async with FakeFleet(2, model=MODEL, behaviors=[hang] * 2) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, deadline=0.5) as pool:
            seen: list[int] = []
            began = time.perf_counter()
            out = await pool.send_all_batched(PROMPTS, on_result=lambda k, r: seen.append(k))
            batched = time.perf_counter() - began
            began = time.perf_counter()
            single = await pool.send_all(PROMPTS[:4], deadline=0.3)
            singles = time.perf_counter() - began
    assert batched < 0.5 + SLACK and singles < 0.3 + SLACK
    for response in out + single:
        assert not response.success and isinstance(response.exception, RequestTimeout)
        assert "deadline" in (response.error or "")
    assert sorted(seen) == list(range(len(PROMPTS)))
    assert [r.agent_index for r in single] == [0, 1, 0, 1]


async def test_deadline_leaves_a_fast_call_alone() -> None:
    async with FakeFleet(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, deadline=30) as pool:
            out = await pool.send_all_batched(PROMPTS)
    assert all(r.success for r in out)


@pytest.mark.parametrize("value", [0, -1, float("inf"), "5", True])
def test_deadline_is_checked(value: object) -> None:
    with pytest.raises(ConfigurationError, match="deadline"):
        VLLMPool(["h:1"], model=MODEL, deadline=value)  # type: ignore[arg-type]
