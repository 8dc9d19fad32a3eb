"""A fresh pool reads each server's past speed from /metrics before its first plan.

vLLM publishes how long its finished sequences ran (``vllm:request_inference_time_seconds``),
so a new pool over servers that have served before knows which are slow without losing a wave
to find out. The fake fleet publishes the same histogram. A sequence runs longer where more run
beside it, so where the pool is not told the slots, a past wave counts only as far as how many
the server ran at once (generated tokens a step, also published) cannot explain it.
"""

from __future__ import annotations

import math

import anyio
import httpx2
import pytest

from aurora_swarm import VLLMPool
from aurora_swarm._server_model import FleetGuess, ServerModel, past_slowdown
from aurora_swarm._transport import ServerGauges, parse_load_gauges
from aurora_swarm.testing import EndpointBehavior, FakeFleet, LatencyModel

from .conftest import MODEL, fleet_of

# What vLLM 0.32 prints (two engines; other metrics left out), and what each line adds up to.
VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 128.0
vllm:num_requests_running{engine="1",model_name="m"} 64.0
vllm:num_requests_waiting{engine="0",model_name="m"} 172.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 9.0
# TYPE vllm:request_inference_time_seconds histogram
vllm:request_inference_time_seconds_bucket{engine="0",le="0.3",model_name="m"} 10.0
vllm:request_inference_time_seconds_sum{engine="0",model_name="m"} 30.0
vllm:request_inference_time_seconds_count{engine="0",model_name="m"} 100.0
vllm:request_inference_time_seconds_sum{engine="1",model_name="m"} 10.0
vllm:request_inference_time_seconds_count{engine="1",model_name="m"} 100.0
vllm:request_inference_time_seconds_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 6000.0
vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9
vllm:generation_tokens_total{engine="1",model_name="m"} 2000.0
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_bucket{engine="0",le="8.0",model_name="m"} 3.0
vllm:iteration_tokens_total_count{engine="0",model_name="m"} 150.0
vllm:iteration_tokens_total_sum{engine="0",model_name="m"} 9000.0
vllm:iteration_tokens_total_count{engine="1",model_name="m"} 50.0
"""


@pytest.mark.parametrize(("page", "expected", "past_wave"), [
    (VLLM_PAGE, ServerGauges(192, 172, 40.0, 200, 8000.0, 200.0, counts_steps=True,
                             step_tokens=9000.0), 0.2),
    ("vllm:num_requests_running 3\nvllm:num_requests_waiting 0\n", ServerGauges(3, 0), None),
    ("vllm:num_requests_running 3\n", None, None),  # no queue gauge: not vLLM's page
    ("# an empty registry\n", None, None),
])
def test_gauges_and_past_wave_from_a_metrics_page(
    page: str, expected: ServerGauges | None, past_wave: float | None
) -> None:
    gauges = parse_load_gauges(page)
    assert gauges == expected
    if gauges is not None and past_wave is not None:
        assert gauges.past_wave == pytest.approx(past_wave)
    elif gauges is not None:
        assert gauges.past_wave is None


LATENCY = LatencyModel(request_overhead=0.002, prompt_time=0.05, max_concurrent_seqs=64)
SLOW = {0: EndpointBehavior(slowness=8.0)}


async def _serve_once_each(fleet: FakeFleet) -> None:
    """Give every server a past: one small request each, on a pool of its own."""
    for endpoint in fleet.endpoints:
        async with VLLMPool([endpoint], model=MODEL, max_tokens=8,
                            transport=fleet.transport) as alone:
            answers = await alone.post_batch(0, ["warm up", "the server"])
            assert all(a.success for a in answers)


async def _prompts_per_endpoint(fleet: FakeFleet, count: int, *,
                                slots: int | None = 64) -> list[int]:
    async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, max_num_seqs=slots,
                        transport=fleet.transport) as fresh:
        out = await fresh.send_all_batched([f"prompt {i}" for i in range(count)])
        assert [r.success for r in out] == [True] * count
        return [e.prompts for e in fresh.stats().endpoints]


async def test_a_fresh_pool_sends_a_one_wave_call_past_a_server_known_to_be_slow() -> None:
    async with fleet_of(4, model=MODEL, latency=LATENCY, behaviors=SLOW) as fleet:
        await _serve_once_each(fleet)
        per_endpoint = await _prompts_per_endpoint(fleet, 96)
    # 96 prompts fit one wave of the three fast servers; the slow one would take 8 waves.
    assert per_endpoint[0] == 0, per_endpoint
    assert sorted(per_endpoint[1:]) == [32, 32, 32]


async def test_without_a_past_the_first_plan_is_the_equal_split() -> None:
    # No history (never served), or no /metrics: nothing tells the servers apart.
    async with fleet_of(4, model=MODEL, latency=LATENCY, behaviors=SLOW) as fleet:
        assert (await _prompts_per_endpoint(fleet, 96))[0] == 24
    async with fleet_of(4, model=MODEL, latency=LATENCY, behaviors=SLOW, metrics=False) as fleet:
        await _serve_once_each(fleet)
        assert (await _prompts_per_endpoint(fleet, 96))[0] == 24


def test_past_sequences_at_once_from_a_metrics_page() -> None:
    gauges = parse_load_gauges(VLLM_PAGE)
    assert gauges is not None and gauges.past_running == pytest.approx(40.0)  # 8,000 / 200
    # 8,000 of the 9,000 tokens its steps processed were generated: steps mostly decoded.
    assert gauges.decoding
    # Long prompts, one-token answers (a vLLM server after a prefix-cache benchmark): a step's
    # generated tokens are no count of its sequences.
    assert not ServerGauges(0, 0, 1.0, 2, 2500.0, 105.0, 0.5, True, 192081.0).decoding
    assert ServerGauges(0, 0, 1.0, 2).past_running is None  # not published


@pytest.mark.parametrize(("wave", "running", "slowdown"), [
    (0.8, 8, 8.0),  # as many at once as the fleet: its wave tells
    (0.05, 8, 0.5),  # twice as fast
    (0.7, 64, 1.0),  # 7x the wave at 8x the batch (a wide server on a CPU): nothing tells
    (0.3, 16, 1.5),  # 3x the wave at 2x the batch: at least 1.5x slower
    (0.1, 2, 1.0),  # the fleet's wave at a quarter of its batch: slower by throughput only
    (0.025, 2, 1.0),  # a quarter of the wave at a quarter of the batch: as fast by throughput
])
def test_a_past_wave_counts_as_far_as_the_batch_cannot_explain_it(
        wave: float, running: float, slowdown: float) -> None:
    assert past_slowdown(wave, running, 0.1, 8) == pytest.approx(slowdown)


async def test_without_the_slots_a_fresh_pool_still_avoids_a_server_slow_at_the_same_load(
) -> None:
    # The same servers and history as above, but the pool is not told the slots: each ran two
    # sequences at once, so the slow one's long past wave cannot be its batch.
    async with fleet_of(4, model=MODEL, latency=LATENCY, behaviors=SLOW) as fleet:
        await _serve_once_each(fleet)
        per_endpoint = await _prompts_per_endpoint(fleet, 96, slots=None)
    assert per_endpoint[0] == 0, per_endpoint


async def test_a_past_wave_a_larger_batch_explains_is_not_planned_with() -> None:
    # Server 0 is 3x slower but, in its past, ran 32 sequences at once where the others ran
    # two: a wide server on a CPU would look the same and be as fast, so without the slots
    # the first plan is the equal split. (Once its answers show it slow, its work may be done
    # again elsewhere.)
    async with fleet_of(4, model=MODEL, latency=LATENCY,
                        behaviors={0: EndpointBehavior(slowness=3.0)}) as fleet:
        await _serve_once_each(fleet)
        async with VLLMPool([fleet.endpoints[0]], model=MODEL, max_tokens=8,
                            transport=fleet.transport) as alone:
            assert all(a.success for a in await alone.post_batch(
                0, [f"wide {i}" for i in range(32)]))
        assert (await _prompts_per_endpoint(fleet, 96, slots=None))[0] == 24


async def test_the_fake_fleet_publishes_what_its_sequences_ran() -> None:
    async with fleet_of(2, model=MODEL, latency=LATENCY, behaviors={1: EndpointBehavior(
            slowness=3.0)}) as fleet:
        await _serve_once_each(fleet)
        async with VLLMPool(fleet.endpoints, model=MODEL, transport=fleet.transport) as pool:
            transport = pool._core.transport
            fast, slow = [await transport.load_gauges(e) for e in fleet.endpoints]
    assert fast is not None and slow is not None
    assert (fast.runs, slow.runs) == (2, 2)
    assert fast.past_wave == pytest.approx(0.05) and slow.past_wave == pytest.approx(0.15)
    assert fast.past_queue == pytest.approx(0.0, abs=0.005)  # two prompts on 64 slots
    # Each ran its two prompts at once: two sequences a step, at any speed.
    assert fast.past_running == pytest.approx(2, rel=0.05)
    assert slow.past_running == pytest.approx(2, rel=0.05)


async def test_a_fresh_pool_plans_with_the_slots_a_queued_past_shows() -> None:
    # 192 prompts on 64 slots: a third wait a wave, a third two, so a sequence waited a wave
    # on average and 64 ran at once: a new pool plans with 64 slots there, not vLLM's 256.
    async with fleet_of(2, model=MODEL, latency=LATENCY) as fleet:
        async with VLLMPool([fleet.endpoints[0]], model=MODEL, max_tokens=8,
                            transport=fleet.transport) as alone:
            assert all(a.success for a in await alone.post_batch(
                0, [f"queued {i}" for i in range(192)]))
            gauges = await alone._core.transport.load_gauges(fleet.endpoints[0])
        assert gauges is not None and gauges.past_queue == pytest.approx(0.05, rel=0.1)
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as fresh:
            assert all(r.success for r in await fresh.send_all_batched(["one", "two"]))
            stats = fresh.stats().endpoints
    assert (stats[0].slots, stats[0].slots_source) == (64, "past")
    assert stats[1].slots_source is None  # served nothing before


async def test_a_server_seen_with_no_queue_is_not_read_again_until_it_holds_more() -> None:
    # Each call puts 32 prompts on each server of 64 slots: all run at once, and a reading
    # taken while they run shows no queue. Reading again while holding no more tells nothing
    # (with thousands of servers, a read a request cost as much client CPU as the requests).
    latency = LatencyModel(request_overhead=0.002, prompt_time=0.15, max_concurrent_seqs=64)
    async with fleet_of(2, model=MODEL, latency=latency) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            for _ in range(3):
                out = await pool.send_all_batched([f"prompt {i}" for i in range(64)])
                assert all(r.success for r in out)
            reads = [fleet.counters(i).requests.get("/metrics", 0) for i in range(2)]
            assert reads == [2, 2], reads  # the past, before the first plan; one load reading
            # Holding more than was seen running unqueued, the pool reads again: the queue
            # shows the slots.
            out = await pool.send_all_batched([f"prompt {i}" for i in range(256)])
            assert all(r.success for r in out)
            assert [e.slots for e in pool.stats().endpoints] == [64, 64]


class _SlowMetrics(httpx2.AsyncBaseTransport):
    """The fleet's transport, with ``/metrics`` answered after ``delay`` seconds; counts the most
    reads in flight at once."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, delay: float) -> None:
        self._inner, self._delay = inner, delay
        self.in_flight = self.most = self.reads = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path != "/metrics":
            return await self._inner.handle_async_request(request)
        self.reads += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await anyio.sleep(self._delay)
            return await self._inner.handle_async_request(request)
        finally:
            self.in_flight -= 1


async def test_a_call_reads_few_servers_gauges_at_once() -> None:
    # 40 servers of 4 slots each hold 32 queued prompts: every one is worth reading, but a
    # read costs the client about what a request does, so one call has at most 8 in flight
    # (uncapped, a fresh call over 4,000 servers spent a third of its CPU reading /metrics).
    latency = LatencyModel(request_overhead=0.002, prompt_time=0.03, max_concurrent_seqs=4)
    async with fleet_of(40, model=MODEL, latency=latency) as fleet:
        transport = _SlowMetrics(fleet.transport, delay=0.1)
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=transport) as pool:
            out = await pool.send_all_batched([f"prompt {i}" for i in range(40 * 32)])
    assert all(r.success for r in out)
    assert transport.reads >= 8, transport.reads  # the servers' queues were worth reading
    assert transport.most == 8, transport.most


# -- a fleet that has never served: the engines' step counts -----------------------------------


def _new_server(since: float = 0.0) -> ServerModel:
    server = ServerModel(new_engine=True)
    server.went_out(server.send(8, since), since)
    return server


@pytest.mark.parametrize(("tokens", "steps", "running", "step_time", "batch", "unfinished"), [
    (40.0, 5.0, 8, (0.1 / 6, 0.11 / 5), 8.0, 0.1),  # 5 whole steps: between t/6 and t'/5
    (0.0, 0.0, 8, (0.1, math.inf), None, 0.1),  # not one step in 0.1 s: 0.1 s a step at least
    (16.0, 2.0, 0, (0.1 / 3, 0.11 / 2), 8.0, None),  # nothing running: no wave bound from it
])
def test_a_new_servers_step_time_is_bounded_by_its_whole_steps(
        tokens: float, steps: float, running: int, step_time: tuple[float, float],
        batch: float | None, unfinished: float | None) -> None:
    server = _new_server()
    server.note_progress(tokens, steps, running, asked=0.1, received=0.11)
    assert server.step_time == pytest.approx(step_time)
    assert server.step_batch == batch
    assert server.unfinished_for == unfinished


def test_only_a_server_new_to_work_is_timed_by_its_steps() -> None:
    server = _new_server()
    server.new_engine = False  # it had served before: its steps are not all this pool's
    server.note_progress(40.0, 5.0, 8, asked=0.1, received=0.11)
    assert server.step_time is None


def test_a_server_is_timed_by_its_steps_only_until_it_answers_or_goes_idle() -> None:
    answered = _new_server()
    answered.answered(answered.held[0], 0.1)
    idle = _new_server()
    idle.drop(idle.held[0])  # taken back: its steps from now on would count idle time
    for server in (answered, idle):
        server.note_progress(40.0, 5.0, 8, asked=0.2, received=0.2)
        assert not server.new_engine and server.step_time is None


def _stepped(steps: float, batch: float = 8.0, at: float = 0.1) -> ServerModel:
    server = _new_server()
    server.note_progress(steps * batch, steps, 8, asked=at, received=at)
    return server


def test_a_server_stepping_clearly_slower_bounds_every_wave_before_any_is_measured() -> None:
    fast = [_stepped(10) for _ in range(5)]  # 10 ms a step, at most
    slow = _stepped(1)  # one step in 0.1 s: at least 50 ms a step
    guess = FleetGuess.of([*fast, slow])
    assert guess.typical is None and guess.floor == pytest.approx(0.1)
    assert guess.step_slowdown(slow) == pytest.approx(5.0)
    assert guess.step_slowdown(fast[0]) == 1.0
    # The fleet has run 0.1 s without finishing a wave; the slow server, 5x that at least.
    assert guess.floor_for(fast[0]) == pytest.approx(0.1)
    assert guess.floor_for(slow) == pytest.approx(0.5)
    assert guess.wave_at(slow, 0.1) == pytest.approx(0.5)
    assert guess.wave_for(slow) is None  # a bound, not a plan: lateness is judged as before


def test_alike_servers_bound_nothing() -> None:
    # Whole steps read a moment apart differ by one: no server is shown slower, so no bound.
    fleet = [_stepped(10), _stepped(9), _stepped(10), _stepped(11)]
    guess = FleetGuess.of(fleet)
    assert [guess.step_slowdown(s) for s in fleet] == [1.0] * 4
    assert guess.floor is None


def test_a_larger_batch_explains_slower_steps() -> None:
    # A wide server on a CPU steps slower because it runs more at once: not slower for that.
    fleet = [_stepped(10, batch=8) for _ in range(3)]
    wide = _stepped(2, batch=64)  # 5x the step time at 8x the batch
    guess = FleetGuess.of([*fleet, wide])
    assert guess.step_slowdown(wide) == 1.0


def test_once_waves_are_measured_a_slow_stepper_is_bounded_by_the_typical_wave() -> None:
    measured = ServerModel(wave=0.2)
    fast, slow = _stepped(10), _stepped(1)
    guess = FleetGuess.of([measured, fast, _stepped(10), _stepped(10), slow])
    assert guess.typical == pytest.approx(0.2) and guess.floor is None
    assert guess.floor_for(slow) == pytest.approx(0.2 * 5)
    assert guess.floor_for(fast) is None
    assert guess.floor_for(measured) is None


async def test_a_fleet_that_never_served_backs_up_a_slow_server_before_the_others_answer(
) -> None:
    # One wave of 8 prompts on each of 8 servers of 256 slots; server 0 is 8x slower. Nothing
    # tells it apart but its engine's steps, read while the wave runs: its prompts go out
    # again to the others' free slots before any server has answered (without the steps,
    # only once the others' answers made it late).
    latency = LatencyModel(request_overhead=0.002, prompt_time=0.5, max_concurrent_seqs=256)
    backups_at_first_answer: list[int] = []
    async with fleet_of(8, model=MODEL, latency=latency, behaviors=SLOW) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:

            def first(index: int, response: object) -> None:
                if not backups_at_first_answer:
                    backups_at_first_answer.append(pool.stats().backups)

            out = await pool.send_all_batched([f"prompt {i}" for i in range(64)],
                                              on_result=first)
            stats = pool.stats()
    assert all(r.success for r in out)
    assert backups_at_first_answer[0] >= 1, backups_at_first_answer
    assert stats.endpoints[0].answered == 0  # the backups answered its prompts first
