"""The ``aurora_swarm`` log: what a job's log shows of a fleet that misbehaves."""

from __future__ import annotations

import logging

import anyio
import pytest

from aurora_swarm import HealthPolicy, RetryPolicy, VLLMPool
from aurora_swarm.testing import LatencyModel

from .conftest import fleet_of

MODEL = "fake-model"
KEY = "sk-very-secret-key-4711"


class _Capture(logging.Handler):
    """Keeps every record, formatted, so a test can wait for one and read them all."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.waits: dict[str, anyio.Event] = {}

    def emit(self, record: logging.LogRecord) -> None:
        record.message = record.getMessage()
        self.records.append(record)
        for needle, event in self.waits.items():
            if needle in record.message:
                event.set()

    async def wait_for(self, needle: str) -> None:
        event = self.waits.setdefault(needle, anyio.Event())
        if not self.messages(needle):
            await event.wait()

    def messages(self, needle: str, level: int = logging.DEBUG) -> list[str]:
        return [r.message for r in self.records if needle in r.message and r.levelno >= level]


@pytest.fixture
def capture() -> _Capture:
    handler = _Capture()
    logger = logging.getLogger("aurora_swarm")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_the_package_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("aurora_swarm").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


async def test_an_endpoint_that_dies_and_comes_back_is_logged_once_each(
    capture: _Capture,
) -> None:
    latency = LatencyModel(prompt_time=0.01, max_concurrent_seqs=8)
    health = HealthPolicy(failure_threshold=2, cooldown=0.05, max_cooldown=0.1, probe_timeout=1)
    retry = RetryPolicy(max_attempts=8, initial_backoff=0.005, max_backoff=0.05)
    prompts = [f"zebra question {i}" for i in range(6000)]
    async with fleet_of(3, model=MODEL, latency=latency) as fleet:
        dying = str(fleet.endpoints[0])
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=16, api_key=KEY,
                            retry=retry, health=health, transport=fleet.transport) as pool:

            answering = anyio.Event()

            async def kill_then_restart() -> None:
                with anyio.fail_after(20):
                    await answering.wait()  # the call is under way
                    await fleet.kill(0)
                    await capture.wait_for(f"{dying} benched")
                    await capture.wait_for(f"{dying} is down")  # a probe failed
                await fleet.restart(0)

            async with anyio.create_task_group() as group:
                group.start_soon(kill_then_restart)
                out = await pool.send_all_batched(
                    prompts, on_result=lambda index, response: answering.set())

    assert all(r.success for r in out)
    lifecycle = ("benched", "is back", "is down")
    assert {r.name for r in capture.records
            if dying in r.message and any(word in r.message for word in lifecycle)
            } == {"aurora_swarm.health"}
    assert len(capture.messages(f"{dying} benched", logging.WARNING)) == 1
    assert len(capture.messages(f"{dying} is back", logging.INFO)) == 1
    assert len(capture.messages(f"{dying} is down", logging.INFO)) == 1
    # The call's summary names the retries, once, at INFO.
    summaries = capture.messages("send_all_batched: 6000 prompts", logging.INFO)
    assert len(summaries) == 1 and "prompts retried" in summaries[0]
    loud = [r.message for r in capture.records if r.levelno > logging.DEBUG]
    assert not any("zebra" in m or KEY in m for m in loud)
    # Nothing per prompt above DEBUG: a handful of lines for 6000 prompts.
    assert len(loud) < 10


async def test_a_quiet_call_logs_nothing_at_info(capture: _Capture) -> None:
    async with fleet_of(2, model=MODEL) as fleet:
        async with VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8,
                            transport=fleet.transport) as pool:
            out = await pool.send_all_batched([f"p{i}" for i in range(50)])
    assert all(r.success for r in out)
    assert not [r for r in capture.records if r.levelno >= logging.INFO]
    assert capture.messages("send_all_batched: 50 prompts over 2 endpoints")
