"""MicroBatcher against a real HTTP fake fleet: coalescing, waiting, overload, faults, closing."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest

from aurora_swarm import (
    BadResponseError,
    ConfigurationError,
    HealthPolicy,
    HTTPStatusError,
    OverloadError,
    PoolClosedError,
    PromptError,
    Response,
    VLLMPool,
)
from aurora_swarm._microbatch import BatcherStats, MicroBatcher
from aurora_swarm.testing import (
    EndpointBehavior,
    FakeClock,
    FakeFleet,
    LatencyModel,
    expected_answer,
)

from .conftest import BOTH_BACKENDS, FAST_RETRY, MODEL, fleet_of, until

anyio_backend = BOTH_BACKENDS

FAST_HEALTH = HealthPolicy(failure_threshold=3, cooldown=0.05, max_cooldown=0.2, probe_timeout=1)


async def submit_all(
    batcher: MicroBatcher, prompts: list[str], max_tokens: list[int | None] | None = None
) -> list[Response]:
    """Submit every prompt from its own task, all at once; answers in input order."""
    out: list[Response | None] = [None] * len(prompts)

    async def one(index: int) -> None:
        tokens = None if max_tokens is None else max_tokens[index]
        out[index] = await batcher.submit(prompts[index], max_tokens=tokens)

    async with anyio.create_task_group() as group:
        for index in range(len(prompts)):
            group.start_soon(one, index)
    return [r for r in out if r is not None]


def check_answers(prompts: list[str], out: list[Response], max_tokens: int | None = 64) -> None:
    assert len(out) == len(prompts)
    for index, (prompt, response) in enumerate(zip(prompts, out, strict=True)):
        assert response.success, (index, response.error)
        assert response.text == expected_answer(prompt, max_tokens)[0], index


# -- coalescing ---------------------------------------------------------------------------------


async def test_concurrent_submits_are_coalesced_into_full_batches(
    pool: VLLMPool, fleet: FakeFleet
) -> None:
    prompts = [f"question {i}" for i in range(64)]
    # No batch leaves half full however slowly the submitters come: 64 fill eight exactly.
    async with MicroBatcher(pool, max_batch=8, max_wait_ms=60_000) as batcher:
        out = await submit_all(batcher, prompts)
    check_answers(prompts, out)
    assert fleet.total_requests() == 8 and fleet.total_prompts() == 64
    assert fleet.totals().completion_requests == 8  # batches are /v1/completions requests
    stats = batcher.stats()
    assert stats.batch_sizes == {8: 8} and stats.batches == 8
    assert stats.mean_batch_size == 8 and stats.mean_fill == 1.0
    assert (stats.submitted, stats.answered, stats.failed, stats.resent) == (64, 64, 0, 0)
    # Batches go to the least busy agent, round-robin among equals: two each.
    assert [fleet.counters(i).completion_requests for i in range(4)] == [2, 2, 2, 2]


async def test_each_submitter_gets_its_own_answer_even_when_choices_come_shuffled() -> None:
    behaviors = [EndpointBehavior(shuffle_choices=True, seed=s) for s in range(3)]
    prompts = [f"item {i} " + "word " * (i % 5) for i in range(300)]
    async with fleet_of(3, behaviors=behaviors) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=64) as pool:
            async with MicroBatcher(pool, max_batch=16, max_wait_ms=5) as batcher:
                out = await submit_all(batcher, prompts)
    check_answers(prompts, out)
    assert fleet.totals().faults.get("shuffle", 0) >= 1


async def test_only_prompts_with_the_same_max_tokens_share_a_batch(pool: VLLMPool) -> None:
    prompts = [f"one two three four five {i}" for i in range(60)]
    budgets: list[int | None] = [[2, 4, None][i % 3] for i in range(60)]
    out: list[Response | None] = [None] * 60
    async with MicroBatcher(pool, max_batch=32, max_wait_ms=60_000, max_tokens=5) as batcher:
        async with anyio.create_task_group() as group:

            async def one(index: int) -> None:
                out[index] = await batcher.submit(prompts[index], max_tokens=budgets[index])

            for index in range(60):
                group.start_soon(one, index)
            await until(lambda: batcher.stats().waiting == 60)
            await batcher.aclose()  # three groups of 20 go out now, one batch each
    for prompt, budget, response in zip(prompts, budgets, out, strict=True):
        text, reason = expected_answer(prompt, 5 if budget is None else budget)
        assert (response.text, response.finish_reason) == (text, reason)
    assert batcher.stats().batch_sizes == {20: 3}


async def test_batches_go_out_concurrently_up_to_max_in_flight() -> None:
    clock = FakeClock(autojump=False)  # requests stay in flight until the test moves time on
    async with fleet_of(2, latency=LatencyModel(request_overhead=0.05), clock=clock) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL,
                            max_tokens=64) as pool:
            for limit, together in ((None, 4), (1, 1)):
                fleet.reset_counters()
                async with MicroBatcher(pool, max_batch=4, max_wait_ms=0,
                                        max_in_flight=limit) as batcher:
                    async with anyio.create_task_group() as group:
                        group.start_soon(submit_all, batcher, [f"p{i}" for i in range(16)])
                        for _ in range(4 // together):
                            await until(lambda n=together: clock.sleepers == n)
                            await anyio.wait_all_tasks_blocked()
                            assert clock.sleepers == together  # no more may go out
                            clock.advance(0.05)
                assert fleet.totals().max_in_flight == together
                assert batcher.stats().batch_sizes == {4: 4}


# -- waiting ------------------------------------------------------------------------------------


async def test_a_partial_batch_waits_for_more_until_max_wait(
    pool: VLLMPool, fleet: FakeFleet
) -> None:
    async with MicroBatcher(pool, max_batch=16, max_wait_ms=60_000) as batcher:
        async with anyio.create_task_group() as group:
            for prompt in ["a", "b", "c"]:
                group.start_soon(batcher.submit, prompt)
            await until(lambda: batcher.stats().waiting == 3)
            await anyio.wait_all_tasks_blocked()
            assert fleet.total_requests() == 0  # three of sixteen: still gathering
            group.cancel_scope.cancel()


async def test_max_wait_flushes_a_partial_batch(pool: VLLMPool, fleet: FakeFleet) -> None:
    async with MicroBatcher(pool, max_batch=16, max_wait_ms=5) as batcher:
        out = await submit_all(batcher, ["a", "b", "c"])  # nobody closes: the wait ends it
    check_answers(["a", "b", "c"], out)
    assert fleet.total_requests() == 1 and batcher.stats().batch_sizes == {3: 1}


async def test_zero_wait_sends_a_lone_prompt_alone(pool: VLLMPool) -> None:
    async with MicroBatcher(pool, max_batch=16, max_wait_ms=0) as batcher:
        await batcher.submit("warm up")
        response = await batcher.submit("alone")
    assert response.text == "ECHO: alone"
    assert batcher.stats().batch_sizes == {1: 2}  # neither waited for company


# -- overload -----------------------------------------------------------------------------------


async def test_a_full_queue_refuses_at_once_with_a_clear_error(pool: VLLMPool) -> None:
    async with MicroBatcher(pool, max_batch=100, max_wait_ms=60_000, max_queue=4) as batcher:
        async with anyio.create_task_group() as group:
            out: list[Response] = []

            async def one(prompt: str) -> None:
                out.append(await batcher.submit(prompt))

            for i in range(4):
                group.start_soon(one, f"p{i}")
            await until(lambda: batcher.stats().waiting == 4)
            with pytest.raises(OverloadError, match=r"max_queue=4 prompts are already waiting"):
                await batcher.submit("one too many")
            assert batcher.stats().refused == 1
            await batcher.aclose()  # flushes the four at once, long before max_wait
    assert sorted(r.text for r in out) == [f"ECHO: p{i}" for i in range(4)]
    assert batcher.stats().batch_sizes == {4: 1}


# -- faults -------------------------------------------------------------------------------------


async def test_an_endpoint_dying_mid_run_loses_and_mislabels_nothing() -> None:
    latency = LatencyModel(request_overhead=0.002, prompt_time=0.001, max_concurrent_seqs=64)
    behaviors = {1: EndpointBehavior(die_after=2), 2: EndpointBehavior(script=("503", "drop"))}
    prompts = [f"question {i} of the run" for i in range(400)]
    async with fleet_of(4, latency=latency, behaviors=behaviors, clock=FakeClock()) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=64, retry=FAST_RETRY,
                            health=FAST_HEALTH) as pool:
            async with MicroBatcher(pool, max_batch=8, max_wait_ms=5) as batcher:
                out: list[Response | None] = [None] * len(prompts)

                async def caller(worker: int) -> None:  # 40 agent loops, 10 prompts each
                    for index in range(worker, len(prompts), 40):
                        out[index] = await batcher.submit(prompts[index])

                async with anyio.create_task_group() as group:
                    for worker in range(40):
                        group.start_soon(caller, worker)
            dead = pool.stats().endpoints[1]
        assert not fleet.is_alive(1)
    check_answers(prompts, [r for r in out if r is not None])
    stats = batcher.stats()
    assert stats.resent >= 1 and stats.answered == 400 and stats.failed == 0
    assert any(r is not None and r.attempts >= 2 for r in out)
    # The dead agent rests: it is not sent batch after batch (round-robin would send ~12).
    assert dead.requests <= 8  # the pool's own retries may add some
    assert sum(size * n for size, n in stats.batch_sizes.items()) == 400  # each once


async def test_one_bad_prompt_does_not_fail_its_batch_neighbours() -> None:
    # A 400 for a whole batch (as if one prompt were bad) sends each prompt again on its own.
    behaviors = {0: EndpointBehavior(script=("400",))}
    async with fleet_of(1, behaviors=behaviors) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=64, retry=FAST_RETRY,
                            health=FAST_HEALTH) as pool:
            async with MicroBatcher(pool, max_batch=4, max_wait_ms=50) as batcher:
                out = await submit_all(batcher, ["w", "x", "y", "z"])
    check_answers(["w", "x", "y", "z"], out)
    assert [r.attempts for r in out] == [2, 2, 2, 2]
    assert batcher.stats().resent == 4


async def test_a_lone_prompt_refused_for_good_gets_a_failed_response() -> None:
    async with fleet_of(1, behaviors={0: EndpointBehavior(script=("400",))}) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=64) as pool:
            async with MicroBatcher(pool, max_batch=1) as batcher:
                response = await batcher.submit("refused")
                assert (await batcher.submit("fine")).text == "ECHO: fine"
    assert not response.success and isinstance(response.exception, HTTPStatusError)
    assert response.exception.status_code == 400
    assert batcher.stats().failed == 1 and batcher.stats().resent == 0


async def test_a_strict_pool_raises_in_the_failed_submitter_only() -> None:
    async with fleet_of(1, behaviors={0: EndpointBehavior(script=("400",))}) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=64, strict=True) as pool:
            async with MicroBatcher(pool, max_batch=1) as batcher:
                with pytest.raises(HTTPStatusError, match="400"):
                    await batcher.submit("refused")
                assert (await batcher.submit("fine")).text == "ECHO: fine"


async def test_a_strict_pool_keeps_the_good_answers_of_a_batch_with_a_failure() -> None:
    # "partial" drops the batch's last choice: only that prompt is sent again; the batcher
    # reads the pool's failures as data, so a strict pool discards no answer.
    async with fleet_of(2, behaviors={0: EndpointBehavior(script=("partial",))}) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=64, strict=True,
                            retry=FAST_RETRY, health=FAST_HEALTH) as pool:
            async with MicroBatcher(pool, max_batch=5, max_wait_ms=60_000) as batcher:
                prompts = [f"s{i}" for i in range(5)]
                out = await submit_all(batcher, prompts)
    check_answers(prompts, out)
    assert batcher.stats().resent == 1 and batcher.stats().batch_sizes == {5: 1}


# -- cancellation and closing -------------------------------------------------------------------


async def test_a_cancelled_submitter_does_not_break_the_batch_for_the_others() -> None:
    clock = FakeClock(autojump=False)  # the batch is answered when the test says so
    async with fleet_of(1, latency=LatencyModel(request_overhead=0.1), clock=clock) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL,
                            max_tokens=64) as pool:
            async with MicroBatcher(pool, max_batch=8, max_wait_ms=60_000) as batcher:
                out: dict[int, Response] = {}
                async with anyio.create_task_group() as group:

                    async def one(index: int) -> None:
                        out[index] = await batcher.submit(f"p{index}")

                    for index in range(7):
                        group.start_soon(one, index)
                    await until(lambda: batcher.stats().waiting == 7)
                    with anyio.CancelScope() as scope:
                        group.start_soon(_cancel_when, scope, lambda: clock.sleepers == 1)
                        await batcher.submit("p7")  # the eighth: its full batch goes out
                    clock.advance(0.1)
    assert sorted(out) == list(range(7))
    assert all(out[i].text == f"ECHO: p{i}" for i in range(7))
    assert fleet.total_requests() == 1 and fleet.total_prompts() == 8
    assert batcher.stats().cancelled == 1


async def test_max_batch_1_cancelling_a_submitter_cancels_only_its_own_request() -> None:
    clock = FakeClock(autojump=False)
    async with fleet_of(2, latency=LatencyModel(request_overhead=0.2), clock=clock) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL,
                            max_tokens=64) as pool:
            async with MicroBatcher(pool, max_batch=1) as batcher:
                async with anyio.create_task_group() as group:
                    out: list[Response] = []

                    async def one(prompt: str) -> None:
                        out.append(await batcher.submit(prompt))

                    group.start_soon(one, "kept")
                    with anyio.CancelScope() as scope:  # cancelled with both in flight
                        group.start_soon(_cancel_when, scope, lambda: clock.sleepers == 2)
                        await batcher.submit("dropped")
                    await until(lambda: fleet.totals().abandoned == 1)
                    clock.advance(0.2)
                assert [r.text for r in out] == ["ECHO: kept"]
                async with anyio.create_task_group() as group:
                    group.start_soon(_advance_when, clock, 0.2, lambda: clock.sleepers == 1)
                    assert (await batcher.submit("after")).text == "ECHO: after"
                stats = batcher.stats()
    assert fleet.total_requests() == 3 and fleet.totals().abandoned == 1
    assert (stats.cancelled, stats.answered, stats.in_flight) == (1, 2, 0)
    assert stats.batch_sizes == {1: 3}


async def test_a_submitter_cancelled_while_waiting_is_never_sent(
    pool: VLLMPool, fleet: FakeFleet
) -> None:
    async with MicroBatcher(pool, max_batch=8, max_wait_ms=60_000) as batcher:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_when, scope, lambda: batcher.stats().waiting == 1)
                await batcher.submit("never mind")
        assert batcher.stats().waiting == 0
    assert fleet.total_prompts() == 0
    assert batcher.stats().cancelled == 1 and batcher.stats().batches == 0


async def test_closing_sends_what_waits_at_once_and_refuses_new_work(pool: VLLMPool) -> None:
    batcher = MicroBatcher(pool, max_batch=64, max_wait_ms=60_000)
    with pytest.raises(PoolClosedError, match="async with"):
        await batcher.submit("too early")
    out: list[Response] = []
    async with batcher:
        async with anyio.create_task_group() as group:

            async def one(prompt: str) -> None:
                out.append(await batcher.submit(prompt))

            for i in range(5):
                group.start_soon(one, f"p{i}")
            await until(lambda: batcher.stats().waiting == 5)
            with anyio.fail_after(30):  # far below max_wait: only a flush ends this in time
                await batcher.aclose()
            await batcher.aclose()  # a second close is harmless
            with pytest.raises(PoolClosedError, match="closed"):
                await batcher.submit("too late")
    assert sorted(r.text for r in out) == [f"ECHO: p{i}" for i in range(5)]
    await batcher.aclose()
    with pytest.raises(PoolClosedError, match="entered once"):
        await batcher.__aenter__()


async def test_an_error_in_the_block_drains_and_propagates_unchanged(pool: VLLMPool) -> None:
    out: list[Response] = []

    async def fails_with_one_pending(outer: anyio.abc.TaskGroup) -> None:
        async with MicroBatcher(pool, max_batch=64, max_wait_ms=60_000) as batcher:

            async def one() -> None:
                out.append(await batcher.submit("pending"))

            outer.start_soon(one)
            await until(lambda: batcher.stats().waiting == 1)
            raise KeyError("boom")

    async with anyio.create_task_group() as outer:
        with pytest.raises(KeyError, match="boom"):  # not wrapped in an exception group
            await fails_with_one_pending(outer)
    assert [r.text for r in out] == ["ECHO: pending"]


async def test_cancelling_the_block_fails_what_is_unanswered_with_a_clear_error() -> None:
    behaviors = {0: EndpointBehavior(default_action="hang")}
    async with fleet_of(1, behaviors=behaviors) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=64) as pool:
            errors: list[BaseException] = []
            async with anyio.create_task_group() as outer:

                async def one(batcher: MicroBatcher, prompt: str) -> None:
                    try:
                        await batcher.submit(prompt)
                    except PoolClosedError as exc:
                        errors.append(exc)

                with anyio.CancelScope() as scope:
                    async with MicroBatcher(pool, max_batch=1, max_wait_ms=0,
                                            max_in_flight=1) as batcher:
                        outer.start_soon(one, batcher, "in flight")
                        outer.start_soon(one, batcher, "still waiting")
                        await until(lambda: fleet.total_requests() == 1
                                    and batcher.stats().waiting == 1)
                        scope.cancel()
                        await anyio.sleep_forever()
            assert scope.cancelled_caught
    messages = sorted(str(e) for e in errors)
    assert messages == [
        "the MicroBatcher was closed before this prompt was sent",
        "the MicroBatcher was closed before this prompt's answer came",
    ]


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch must be an int >= 1, got 0"),
        ({"max_batch": True}, "max_batch must be an int >= 1"),
        ({"max_batch": 2.0}, "max_batch must be an int >= 1"),
        ({"max_wait_ms": -1}, "max_wait_ms must be a finite number >= 0"),
        ({"max_wait_ms": math.nan}, "max_wait_ms must be a finite number >= 0"),
        ({"max_wait_ms": math.inf}, "max_wait_ms must be a finite number >= 0"),
        ({"max_wait_ms": "10"}, "max_wait_ms must be a finite number >= 0"),
        ({"max_queue": 0}, "max_queue must be an int >= 1, got 0"),
        ({"max_tokens": 0}, "max_tokens must be an int >= 1, got 0"),
        ({"max_in_flight": 0}, "max_in_flight must be an int >= 1, got 0"),
    ],
)
async def test_bad_arguments_raise_at_once(
    pool: VLLMPool, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MicroBatcher(pool, **kwargs)


async def test_bad_submissions_raise_at_once(pool: VLLMPool, fleet: FakeFleet) -> None:
    async with MicroBatcher(pool) as batcher:
        with pytest.raises(PromptError, match="str prompt, got list"):
            await batcher.submit([{"role": "user", "content": "hi"}])  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="max_tokens must be an int >= 1"):
            await batcher.submit("x", max_tokens=-3)
    assert fleet.total_requests() == 0 and batcher.stats().submitted == 0


async def test_properties_and_stats_before_use(pool: VLLMPool) -> None:
    batcher = MicroBatcher(pool, max_batch=4, max_wait_ms=2.5, max_queue=9)
    assert (batcher.max_batch, batcher.max_wait_ms, batcher.max_queue) == (4, 2.5, 9)
    assert batcher.max_in_flight == 32 * pool.size
    assert "max_batch=4" in repr(batcher) and "not started" in repr(batcher)
    stats = batcher.stats()
    assert isinstance(stats, BatcherStats)
    assert stats.batches == 0 and stats.mean_batch_size == 0.0 and stats.batch_sizes == {}


async def test_bad_answers_inside_a_batch_are_sent_again() -> None:
    behaviors = {0: EndpointBehavior(script=("dup", "badjson"))}
    async with fleet_of(2, behaviors=behaviors) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport,
                            model=MODEL, max_tokens=64, retry=FAST_RETRY,
                            health=FAST_HEALTH) as pool:
            async with MicroBatcher(pool, max_batch=4, max_wait_ms=20) as batcher:
                prompts = [f"q{i}" for i in range(16)]
                out = await submit_all(batcher, prompts)
    check_answers(prompts, out)
    assert fleet.counters(0).faults.get("dup", 0) == 1
    assert not any(isinstance(r.exception, BadResponseError) for r in out)


async def _cancel_when(scope: anyio.CancelScope, condition: Callable[[], bool]) -> None:
    await until(condition)
    scope.cancel()


async def _advance_when(clock: FakeClock, seconds: float, condition: Callable[[], bool]) -> None:
    await until(condition)
    clock.advance(seconds)


async def test_batches_skip_an_agent_the_pool_has_resting() -> None:
    """The batcher reads the pool's own endpoint health: an agent asked to wait (Retry-After)
    gets no batch until the wait is over, and other calls of the pool see the same rest."""
    behaviors = {0: EndpointBehavior(script=("429",), retry_after=50)}
    async with fleet_of(2, behaviors=behaviors) as fleet:
        async with VLLMPool(fleet.endpoints, transport=fleet.transport, model=MODEL,
                            max_tokens=64, retry=FAST_RETRY) as pool:
            async with MicroBatcher(pool, max_batch=1) as batcher:
                for k in range(6):
                    assert (await batcher.submit(f"p{k}")).text == f"ECHO: p{k}"
            assert pool._health(0).wait_time(time.monotonic()) > 40  # still resting
    assert fleet.counters(0).completion_requests == 1  # the 429, then no more
    assert fleet.counters(1).completion_requests == 6  # p0 again, then the rest
