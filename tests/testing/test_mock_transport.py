"""The in-process fleet: the same answers and faults as on loopback, no sockets, asyncio and
trio, modelled time on a fake clock."""

from __future__ import annotations

import math

import anyio
import httpx2
import pytest

from aurora_swarm import (
    ConnectError,
    RequestTimeout,
    Response,
    RetryPolicy,
    Timeouts,
    VLLMPool,
)
from aurora_swarm.testing import (
    EndpointBehavior,
    EndpointCounters,
    FakeClock,
    FakeFleet,
    LatencyModel,
    MockTransport,
    RealClock,
    expected_answer,
)

from ..conftest import BOTH_BACKENDS, MODEL, until

anyio_backend = BOTH_BACKENDS

ONE_TRY = RetryPolicy(max_attempts=1)
PROMPTS = ["a b c", "d e", "f"]


def outcome(responses: list[Response]) -> list[tuple[bool, str, str]]:
    return [(r.success, r.text, type(r.exception).__name__) for r in responses]


async def batch_through(fleet: FakeFleet, transport: MockTransport | None) -> list[Response]:
    async with VLLMPool(fleet.endpoints, model=MODEL, retry=ONE_TRY, max_tokens=8,
                        timeout=Timeouts(request=0.5, per_prompt=0), transport=transport) as pool:
        return await pool.post_batch(0, PROMPTS)


ACTIONS = pytest.mark.parametrize("action", ["ok", "shuffle", "partial", "dup", "badjson", "503",
                                             "429", "400", "drop", "die", "hang"])


async def through_the_mock(action: str) -> tuple[list[Response], EndpointCounters]:
    """What one batch meets on an in-process endpoint whose first request gets ``action``."""
    behavior = {0: EndpointBehavior(script=(action,), retry_after=0)}
    async with FakeFleet(1, behaviors=behavior, in_process=True, clock=FakeClock()) as fleet:
        return await batch_through(fleet, fleet.transport), fleet.counters(0)


@ACTIONS
@pytest.mark.integration  # loopback servers
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_every_action_looks_the_same_as_on_loopback(action: str, anyio_backend: str) -> None:
    mocked, counters = await through_the_mock(action)
    behavior = {0: EndpointBehavior(script=(action,), retry_after=0)}
    async with FakeFleet(1, behaviors=behavior) as wired:  # the loopback fleet is the reference
        assert outcome(await batch_through(wired, None)) == outcome(mocked)
        assert wired.counters(0).faults == counters.faults


@ACTIONS
async def test_every_action_ends_in_its_own_outcome(action: str, anyio_backend: str) -> None:
    mocked, counters = await through_the_mock(action)
    expected = {
        "ok": ("NoneType",) * 3, "shuffle": ("NoneType",) * 3,
        "partial": ("NoneType", "NoneType", "BadResponseError"),
        "dup": ("BadResponseError", "NoneType", "BadResponseError"),
        "badjson": ("BadResponseError",) * 3, "503": ("HTTPStatusError",) * 3,
        "429": ("HTTPStatusError",) * 3, "400": ("HTTPStatusError",) * 3,
        "die": ("ConnectError",) * 3, "hang": ("RequestTimeout",) * 3,
    }.get(action)
    names = tuple(name for _, _, name in outcome(mocked))
    if expected is None:  # "drop": dispatch may send the request again (as on loopback)
        assert set(names) <= {"NoneType", "ConnectError"}
    else:
        assert names == expected
        # A refused batch (400) is split to find the bad prompt: its parts are sent again.
        assert counters.prompts_received == 3 or action == "400"
    assert counters.faults.get(action, 0) == (action != "ok")


async def test_answers_match_the_answer_rule() -> None:
    async with FakeFleet(2, in_process=True) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=2,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched(PROMPTS)
            chat = await pool.post(1, "x y z")
    assert [r.text for r in out] == [expected_answer(p, 2)[0] for p in PROMPTS]
    assert chat.success and chat.endpoint == fleet.endpoints[1]
    assert fleet.totals().chat_requests == 1


async def test_modelled_time_passes_on_the_fake_clock_only() -> None:
    """Ten seconds of modelled latency cost no real time: the clock jumps while all wait."""
    clock = FakeClock()
    latency = LatencyModel(request_overhead=10.0, prompt_time=1.0, max_concurrent_seqs=2)
    async with FakeFleet(1, latency=latency, in_process=True, clock=clock) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=4,
                            transport=fleet.transport) as pool:
            out = await pool.post_batch(0, ["p"] * 4)
    assert all(r.success for r in out)
    assert clock.now() == pytest.approx(12.0)  # 10 s overhead, then 4 prompts on 2 slots


async def test_a_hang_times_out_at_the_request_timeout_on_the_fleet_clock() -> None:
    clock = FakeClock()
    behavior = {0: EndpointBehavior(default_action="hang")}
    async with FakeFleet(1, behaviors=behavior, in_process=True, clock=clock) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, retry=ONE_TRY, timeout=120.0,
                            transport=fleet.transport) as pool:
            response = await pool.post(0, "anyone?")
    assert isinstance(response.exception, RequestTimeout)
    assert clock.now() == pytest.approx(120.5)  # the request's limit: 120 s + 0.5 s a prompt


async def test_a_slow_answer_past_the_timeout_times_out_and_frees_its_slots() -> None:
    clock = FakeClock()
    latency = LatencyModel(prompt_time=100.0, max_concurrent_seqs=1)
    async with FakeFleet(1, latency=latency, in_process=True, clock=clock) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, retry=ONE_TRY, timeout=30.0,
                            transport=fleet.transport) as pool:
            late = await pool.post(0, "slow")
        assert isinstance(late.exception, RequestTimeout)
        assert fleet.counters(0).abandoned == 1 and fleet.counters(0).in_flight == 0


async def test_a_killed_endpoint_refuses_and_a_restarted_one_answers() -> None:
    async with FakeFleet(2, in_process=True) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, retry=ONE_TRY,
                            transport=fleet.transport) as pool:
            await fleet.kill(1)
            assert not fleet.is_alive(1)
            refused = await pool.post(1, "hello")
            await fleet.restart(1)
            answered = await pool.post(1, "hello")
    assert isinstance(refused.exception, ConnectError)
    assert answered.text == "ECHO: hello"


async def test_killing_an_endpoint_drops_its_requests_in_flight() -> None:
    clock = FakeClock(autojump=False)
    latency = LatencyModel(request_overhead=1.0)
    async with FakeFleet(1, latency=latency, in_process=True, clock=clock) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, retry=ONE_TRY,
                            transport=fleet.transport) as pool:
            out: list[Response] = []
            async with anyio.create_task_group() as group:

                async def ask() -> None:
                    out.append(await pool.post(0, "hello"))

                group.start_soon(ask)
                await until(lambda: clock.sleepers == 1)
                await fleet.kill(0)
    assert isinstance(out[0].exception, ConnectError)
    assert fleet.counters(0).abandoned == 0  # the server went away, not the client


async def test_a_cancelled_request_is_abandoned_like_a_closed_connection() -> None:
    clock = FakeClock(autojump=False)
    latency = LatencyModel(request_overhead=1.0)
    async with FakeFleet(1, latency=latency, in_process=True, clock=clock) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, transport=fleet.transport) as pool:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:
                    group.start_soon(pool.post, 0, "never mind")
                    await until(lambda: clock.sleepers == 1)
                    scope.cancel()
    assert fleet.counters(0).abandoned == 1 and clock.sleepers == 0


async def test_a_fleet_on_ports_has_no_in_process_transport(anyio_backend: str) -> None:
    fleet = FakeFleet(1)
    with pytest.raises(RuntimeError, match="in_process=True"):
        _ = fleet.transport
    with pytest.raises(ValueError, match="in_process=True"):
        FakeFleet(1, clock=FakeClock())
    assert isinstance(FakeFleet(1, in_process=True).clock, RealClock)


async def test_the_transport_serves_a_plain_httpx2_client() -> None:
    async with FakeFleet(1, in_process=True) as fleet:
        async with httpx2.AsyncClient(transport=fleet.transport) as client:
            health = await client.get(fleet.endpoints[0].url + "/health")
            models = await client.get(fleet.endpoints[0].base_url + "/models")
            missing = None
            with pytest.raises(httpx2.ConnectError, match="connection refused"):
                missing = await client.get("http://elsewhere.invalid:1/health")
    assert health.status_code == 200
    assert models.json()["data"][0]["max_model_len"] == 4096
    assert missing is None


async def test_a_pool_refuses_what_is_not_a_transport() -> None:
    from aurora_swarm import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"httpx2\.AsyncBaseTransport"):
        VLLMPool(["h:1"], model=MODEL, transport=object())  # type: ignore[arg-type]


# -- the fake clock on its own ------------------------------------------------------------------


async def test_fake_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = FakeClock(start=5.0)
    woke: list[tuple[str, float]] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    async with anyio.create_task_group() as group:
        for name, seconds in (("late", 3.0), ("soon", 1.0), ("now", 0.0), ("mid", 2.0)):
            group.start_soon(nap, name, seconds)
    assert woke == [("now", 5.0), ("soon", 6.0), ("mid", 7.0), ("late", 8.0)]


async def test_a_manual_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(autojump=False)
    woke: list[float] = []

    async def nap() -> None:
        await clock.sleep(10)
        woke.append(clock.now())

    async with anyio.create_task_group() as group:
        group.start_soon(nap)
        await until(lambda: clock.sleepers == 1)
        await anyio.wait_all_tasks_blocked()
        assert woke == []
        clock.advance(9.5)
        await anyio.wait_all_tasks_blocked()
        assert woke == []
        clock.advance(0.5)
    assert woke == [10.0]
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="finite"):
            clock.advance(bad)


async def test_a_cancelled_sleeper_hands_the_jumping_on() -> None:
    clock = FakeClock()
    woke: list[float] = []

    async def nap(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(clock.now())

    async with anyio.create_task_group() as group:
        with anyio.CancelScope() as first:
            group.start_soon(nap, 50.0)
            await clock.sleep(0)
            first.cancel()  # cancels only this task's own wait; the nap goes on
    assert woke == [50.0]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_fleet_on_ports_says_it_needs_asyncio(anyio_backend: str) -> None:
    with pytest.raises(RuntimeError, match="in_process=True"):
        async with FakeFleet(1):
            pass
