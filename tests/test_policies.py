"""Retry, health and chunking policies as pure functions over tables of cases."""

from __future__ import annotations

import math
import time

import pytest

from aurora_swarm import (
    BadResponseError,
    Chunking,
    ConfigurationError,
    ConnectError,
    HealthPolicy,
    HTTPStatusError,
    PromptError,
    RequestTimeout,
    RetryPolicy,
)
from aurora_swarm._health import Health
from aurora_swarm._schedule import Load, admit, lead_time, water_level


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
    with pytest.raises(ConfigurationError, match=f"RetryPolicy.{field} must be >= 1"):
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
    now = time.monotonic()
    health.record_failure(ConnectError("x"), policy, RetryPolicy(initial_backoff=0.0))
    first = health.benched_until - now
    health.probe_result(False, policy)
    second = health.benched_until - time.monotonic()
    health.probe_result(False, policy)
    third = health.benched_until - time.monotonic()
    assert first == pytest.approx(1.0, abs=0.05)
    assert second == pytest.approx(2.0, abs=0.05)
    assert third == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize(
    ("total", "endpoints", "pending", "weight", "expected"),
    [
        (3200, 8, 3200, None, 50),       # probe chunk: an eighth of the fair share
        (3200, 8, 3200, 1 / 8, 100),     # known speed: a quarter of the share of what is left
        (3200, 8, 400, 1 / 8, 50),       # never below the floor...
        (3200, 8, 30, 1 / 8, 30),        # ...but never more than is pending
        (10, 4, 10, None, 3),            # tiny call: about one chunk per endpoint
        (10**6, 10, 10**6, 0.1, 1024),   # capped by max_chunk
        (3200, 8, 3200, 0.5, 400),       # a fast endpoint takes more
    ],
)
def test_chunk_size(total: int, endpoints: int, pending: int, weight: float | None,
                    expected: int) -> None:
    chunking = Chunking(min_chunk=32)
    size = chunking.size(total=total, endpoints=endpoints, pending=pending, weight=weight)
    assert size == expected


@pytest.mark.parametrize(
    ("total", "endpoints", "expected"),
    [(10_000, 100, 100), (12_800, 100, 128), (25_600, 100, 256), (25_700, 100, 64),
     (3200, 8, 64), (256, 4, 64), (100_000, 100, 125), (10, 4, 3)],
)
def test_default_chunk_floor(total: int, endpoints: int, expected: int) -> None:
    """A share of up to 256 prompts goes whole; a larger one in eighths, at least 64."""
    assert Chunking().floor(total, endpoints) == expected


def test_fixed_chunk_size() -> None:
    assert Chunking(chunk_size=7).size(total=100, endpoints=2, pending=100, weight=0.5) == 7
    with pytest.raises(ConfigurationError, match="chunk_size must be >= 1"):
        Chunking(chunk_size=0)


def test_uniform_fleet_request_count_is_bounded() -> None:
    """Replaying the sizing rule on a uniform fleet gives at most 8 chunks per endpoint."""
    chunking = Chunking()
    for total, endpoints in [(3200, 8), (10_000, 100), (100, 4), (20_000, 100), (7, 3)]:
        pending, chunks = total, 0
        first = endpoints * chunking.max_in_flight
        while pending:
            weight = None if chunks < first else 1 / endpoints
            pending -= chunking.size(total=total, endpoints=endpoints, pending=pending,
                                     weight=weight)
            chunks += 1
        assert chunks / endpoints <= 8, (total, endpoints, chunks)


def _measured(rate: float, floor: float) -> Load:
    """A load that has answered steadily at ``rate`` prompts/s, ``floor`` s at least a request."""
    return Load(done=rate, busy=1.0, queued_answers=5, floor=floor, floor_size=1)


def test_admit_keeps_slow_endpoint_out_of_the_tail() -> None:
    now = 100.0
    slow = _measured(100.0, 0.06)  # 100 prompts/s, 60 ms at least
    # the fleet finishes in 10 s: the slow endpoint takes its chunk
    assert admit(50, slow, 100.0, now + 10.0, now) == 50
    # the fleet finishes in 20 ms, sooner than the 60 ms this endpoint needs for one prompt
    assert admit(10, slow, 100.0, now + 0.02, now) == 0
    # in between: a smaller chunk that still finishes in time (0.3 s holds 30 prompts)
    assert admit(50, slow, 100.0, now + 0.3, now) == 30
    # a margin to spare shrinks it further
    assert admit(50, slow, 100.0, now + 0.3, now, lead=0.1) == 20
    # unknown speed: no opinion
    assert admit(50, Load(), None, now + 0.01, now) == 50


def test_admit_counts_the_work_already_in_flight() -> None:
    now = 100.0
    busy = _measured(100.0, 0.01)
    busy.started(20, now - 0.05)  # 20 prompts sent 50 ms ago: 15 left, done in 150 ms
    assert busy.free_at(now, 100.0) == pytest.approx(now + 0.15)
    assert admit(50, busy, 100.0, now + 0.3, now) == 15


def test_water_level_fills_the_servers_that_free_up_first() -> None:
    # two idle servers of 100 prompts/s: 100 prompts take 0.5 s
    assert water_level([(0.0, 100.0), (0.0, 100.0)], 100) == pytest.approx(0.5)
    # one busy until 1.0: the idle one takes everything that fits before then
    assert water_level([(0.0, 100.0), (1.0, 100.0)], 50) == pytest.approx(0.5)
    # ... and past it, both share the rest
    assert water_level([(0.0, 100.0), (1.0, 100.0)], 300) == pytest.approx(2.0)
    assert water_level([], 10) == math.inf


def test_lead_time_only_for_endpoints_slower_than_the_mean() -> None:
    assert lead_time(64, 1600.0, 1333.0) == 0.0
    assert lead_time(64, 533.0, 1333.0) == pytest.approx(64 / 533 - 64 / 1333)


def test_rate_is_measured_between_answers_once_requests_queue() -> None:
    load = Load()
    # two requests of 64 sent at once; the server answers one every 40 ms after a 30 ms
    # fixed cost: the first answer, alone, looks like 64 / 0.07 prompts/s
    load.started(64, 0.0)
    load.started(64, 0.0)
    load.finished(64, 64, 0.0, 0.07)
    assert load.rate() == pytest.approx(64 / 0.07)
    load.started(64, 0.07)
    load.finished(64, 64, 0.0, 0.11)
    load.started(64, 0.11)
    load.finished(64, 64, 0.07, 0.15)
    # two answers that waited behind others: their gaps give the true 1600 prompts/s
    assert load.rate() == pytest.approx(1600.0)


def test_rate_of_a_server_running_requests_side_by_side() -> None:
    load = Load()
    # a GPU runs both requests at once: answers 1 ms apart, 64 prompts each, every 100 ms
    for k in range(3):
        t = 0.1 * k
        load.started(64, t)
        load.started(64, t)
        load.finished(64, 64, t, t + 0.1)
        load.finished(64, 64, t, t + 0.101)
    rate = load.rate()
    assert rate is not None
    # about 128 prompts per 100 ms, not 64 per millisecond
    assert 1000.0 < rate < 2000.0


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
