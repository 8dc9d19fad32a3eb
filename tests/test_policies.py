"""Retry, health and chunking policies as pure functions over tables of cases."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aurora_swarm import (
    POOL_DEFAULT,
    BadResponseError,
    Chunking,
    ConfigurationError,
    ConnectError,
    Endpoint,
    HealthPolicy,
    HTTPStatusError,
    PoolDefault,
    PromptError,
    RequestTimeout,
    RetryPolicy,
    Timeouts,
    Usage,
)
from aurora_swarm._health import Health
from aurora_swarm._stats import Counters


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (ConnectError("refused"), True),
        (RequestTimeout("slow"), True),
        (BadResponseError("garbage"), True),
        (HTTPStatusError(408, "x"), True),
        (HTTPStatusError(409, "x"), True),
        (HTTPStatusError(429, "x"), True),
        (HTTPStatusError(500, "x"), True),
        (HTTPStatusError(503, "x"), True),
        (HTTPStatusError(400, "x"), False),
        (HTTPStatusError(404, "x"), False),
        (HTTPStatusError(422, "x"), False),
        (PromptError(3, "too long"), False),
        (ValueError("bug"), False),
    ],
)
def test_what_is_retried(exc: Exception, retryable: bool) -> None:
    assert RetryPolicy.is_retryable(exc) is retryable


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, max_retry_after=5.0)
    for failures in range(1, 12):
        assert 0 <= policy.backoff(failures) <= 1.0
    assert policy.backoff(1, HTTPStatusError(429, "slow down", retry_after=2.5)) >= 2.5
    assert policy.backoff(1, HTTPStatusError(429, "slow down", retry_after=999)) <= 5.0


def test_backoff_has_jitter() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=100.0)
    assert len({round(policy.backoff(5), 6) for _ in range(20)}) > 1


@pytest.mark.parametrize("field", ["max_attempts"])
def test_retry_policy_validation(field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"RetryPolicy.{field} must be an int >= 1"):
        RetryPolicy(**{field: 0})


async def test_retry_call_stops_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.0)
    seen: list[int] = []

    async def always_fails(attempt: int) -> int:
        seen.append(attempt)
        raise ConnectError("refused")

    with pytest.raises(ConnectError):
        await policy.call(always_fails)
    assert seen == [1, 2, 3]


async def test_retry_call_does_not_retry_a_bad_request() -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.0)
    seen: list[int] = []

    async def refused(attempt: int) -> int:
        seen.append(attempt)
        raise HTTPStatusError(400, "bad prompt")

    with pytest.raises(HTTPStatusError):
        await policy.call(refused)
    assert seen == [1]


def test_health_benches_after_threshold_and_probe_brings_back() -> None:
    policy = HealthPolicy(failure_threshold=2, cooldown=0.0)
    retry = RetryPolicy(initial_backoff=0.0)
    health = Health()
    health.record_failure(ConnectError("x"), policy, retry)
    assert not health.benched
    health.record_failure(ConnectError("x"), policy, retry)
    assert health.benched and health.wait_time(time.monotonic()) == 0  # probe at once
    health.probe_result(False, policy)
    assert health.down and health.benched
    health.probe_result(True, policy)
    assert not health.benched and not health.down
    # half-open: the next failure benches again
    health.record_failure(ConnectError("x"), policy, retry)
    assert health.benched


def test_health_cooldown_doubles_and_is_capped() -> None:
    policy = HealthPolicy(failure_threshold=1, cooldown=1.0, max_cooldown=3.0)
    health = Health()
    health.record_failure(ConnectError("x"), policy, RetryPolicy(initial_backoff=0.0), now=100.0)
    assert health.benched_until == 101.0 and health.wait_time(100.0) == 0  # probed at once
    health.probe_result(False, policy, now=100.5)
    assert health.benched_until == 102.5 and health.wait_time(101.5) == 1.0
    health.probe_result(False, policy, now=103.0)
    assert health.benched_until == 106.0  # capped at 3 s
    assert not health.available(105.9)
    health.probe_result(True, policy, now=106.0)
    assert health.available(106.0)


def test_counters_count_requests_failures_and_answers() -> None:
    counters = Counters()
    counters.sent(8, batch=True)
    counters.sent(2, batch=True, retry=True, backup=True)
    counters.failed("HTTP 503", 2)
    counters.answered_request(8, 0.25, Usage(10, 20))
    counters.took_back()
    stats = counters.snapshot(Endpoint("h", 1))
    assert (stats.requests, stats.batch_requests, stats.prompts, stats.retries) == (2, 2, 10, 1)
    assert (stats.backups, stats.taken_back, stats.answered) == (1, 1, 8)
    assert stats.failures == {"HTTP 503": 2}
    assert (stats.prompt_tokens, stats.completion_tokens, stats.latency_p50) == (10, 20, 0.25)


def test_prefix_homes_group_alike_prompts_and_balance_load() -> None:
    from aurora_swarm._schedule import prefix_homes

    texts = [f"Rubric {p:03d}: " + "x" * 300 + f" answer {k}" for k in range(10) for p in range(60)]
    homes, groups = prefix_homes(texts, 4, 256)
    by_group: dict[int, set[int]] = {}
    for home, group in zip(homes, groups, strict=True):
        by_group.setdefault(group, set()).add(home)
    assert len(by_group) == 60
    assert all(len(h) == 1 for h in by_group.values())  # one home per prefix group
    loads = [homes.count(e) for e in range(4)]
    assert max(loads) - min(loads) <= 20, loads  # balanced to within two groups
    assert prefix_homes(texts, 4, 256) == (homes, groups)  # stable


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Timeouts(connect=0), "Timeouts.connect must be > 0"),
        (lambda: Timeouts(request=-1), "Timeouts.request must be a finite number"),
        (lambda: Timeouts(per_prompt=float("nan")), "Timeouts.per_prompt must be a finite"),
        (lambda: Timeouts(request="10"), "Timeouts.request must be a finite number"),
        (lambda: HealthPolicy(failure_threshold=True), "HealthPolicy.failure_threshold"),
        (lambda: HealthPolicy(cooldown=float("inf")), "HealthPolicy.cooldown"),
        (lambda: Chunking(chunk_size=0), "Chunking.chunk_size must be an int >= 1"),
        (lambda: Chunking(adapt_to_speed="yes"), "Chunking.adapt_to_speed must be True or"),
        (lambda: RetryPolicy(max_backoff=-0.5), "RetryPolicy.max_backoff"),
    ],
)
def test_policies_refuse_bad_values_naming_the_field(make: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()


@pytest.mark.parametrize("policy", [RetryPolicy, HealthPolicy, Timeouts, Chunking])
def test_policies_take_keyword_arguments_only(policy: Any) -> None:
    with pytest.raises(TypeError):
        policy(1)
    assert Timeouts(request=None).for_chunk(10) is None


def test_the_pool_default_marker_is_one_value_that_pickles() -> None:
    import pickle

    assert PoolDefault() is POOL_DEFAULT
    assert pickle.loads(pickle.dumps(POOL_DEFAULT)) is POOL_DEFAULT
    assert repr(POOL_DEFAULT) == "POOL_DEFAULT"
