"""A batch job whose whole fleet goes away: a pause, not a failure; honest summaries."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from aurora_swarm import ConfigurationError, EndpointUnavailable, HealthPolicy, VLLMPool
from aurora_swarm._cli_run import format_summary
from aurora_swarm.jobs import FleetDownError, JobProgress, JobSummary, read_results, run_job
from aurora_swarm.testing import FakeClock, FakeFleet, LatencyModel, expected_answer

from .conftest import FAST_RETRY, MODEL, fleet_of

PROMPTS = [f"item {i}" for i in range(2000)]
# 4 endpoints x 8 slots x 50 ms a prompt: about 640 prompts/s, so 2,000 take some 3 s.
LATENCY = LatencyModel(prompt_time=0.05, max_concurrent_seqs=8)


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def kill_all_after(fleet: FakeFleet, out: Path, lines: int) -> None:
    while count_lines(out) < lines:  # noqa: ASYNC110 - a file, no event to wait on
        await anyio.sleep(0.01)
    for k in range(len(fleet)):
        await fleet.kill(k)


# A server killed while a client connects to it can, rarely, make the HTTP library leak the
# socket of that half-made connection (the ResourceWarning names httpcore's connect_tcp): a
# warning about a third-party library, not the job runner, in tests that kill a whole fleet.
KILLS_SOCKETS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
# A loopback fleet killed and restarted while the job waits for it, seconds of real time:
# integration tests, left out of the unit suite by `-m "not integration"`.
INTEGRATION = pytest.mark.integration


def make_pool(fleet: FakeFleet) -> VLLMPool:
    transport = fleet.transport if fleet.in_process else None
    return VLLMPool(fleet.endpoints, model=MODEL, max_tokens=8, retry=FAST_RETRY,
                    health=HealthPolicy(cooldown=0.2, probe_timeout=1.0), transport=transport)


@INTEGRATION
@KILLS_SOCKETS
async def test_the_whole_fleet_killed_and_back_after_3_s_is_a_pause(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    seen: list[JobProgress] = []
    async with FakeFleet(4, model=MODEL, latency=LATENCY) as fleet, make_pool(fleet) as pool:
        summary: JobSummary | None = None

        async def job() -> None:
            nonlocal summary
            summary = await run_job(pool, PROMPTS, out, fleet_wait=60, window=500,
                                    progress=seen.append, progress_interval=0.1)

        async with anyio.create_task_group() as group:
            group.start_soon(job)
            await kill_all_after(fleet, out, 300)
            killed_at = time.monotonic()
            written = count_lines(out)
            with anyio.fail_after(30):  # the pool first tries the dead fleet for a moment
                while not any(p.paused is not None for p in seen):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await anyio.sleep(max(0.0, killed_at + 3 - time.monotonic()))
            assert count_lines(out) - written < 50  # paused: only what was in flight settled
            for k in range(len(fleet)):
                await fleet.restart(k)
        assert summary is not None
        resumed = time.monotonic() - killed_at
    records = lines_of(out)
    assert len(records) == 2000 and len({r["id"] for r in records}) == 2000  # each once
    assert all(r["success"] for r in records), {r["cause"] for r in records}
    assert [r.text for r in read_results(out)] == [expected_answer(p, 8)[0] for p in PROMPTS]
    assert (summary.answered, summary.failed, summary.unsent, summary.complete) == (
        2000, 0, 0, True)
    assert summary.pauses >= 1 and 0.5 < summary.paused < resumed
    assert any(p.paused is not None for p in seen) and seen[-1].paused is None
    assert set(summary.benched) == {str(e) for e in fleet.endpoints}
    rows = format_summary(summary, "items").splitlines()
    assert [r.split()[0] for r in rows[1:]] == [
        "items", "answered", "failed", "requests", "endpoints", "benched", "paused", "tokens",
        "results"]
    assert "4 endpoints: " not in rows[6]  # four names are listed, not counted


@INTEGRATION
@KILLS_SOCKETS
async def test_a_fleet_that_stays_down_leaves_the_rest_unsent_and_a_rerun_finishes(
    tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    async with FakeFleet(4, model=MODEL, latency=LATENCY) as fleet:
        async with make_pool(fleet) as pool:
            caught: list[FleetDownError] = []

            async def job() -> None:
                with pytest.raises(FleetDownError) as raised:
                    await run_job(pool, PROMPTS, out, fleet_wait=1.5, window=500)
                caught.append(raised.value)

            async with anyio.create_task_group() as group:
                group.start_soon(job)
                await kill_all_after(fleet, out, 300)
            error = caught[0]
            assert isinstance(error, EndpointUnavailable)
            records = lines_of(out)
            assert error.sent == len(records) and error.sent + error.unsent == 2000
            assert error.unsent > 1000 and 1.5 <= error.waited < 5
            assert "left unsent; rerun the same command to continue" in str(error)
            assert all(r["success"] for r in records)  # nothing unsent written as failed
            assert error.summary.unsent == error.unsent and not error.summary.complete
            for k in range(len(fleet)):
                await fleet.restart(k)
            again = await run_job(pool, PROMPTS, out, fleet_wait=1.5)
    assert (again.skipped, again.sent, again.complete) == (error.sent, error.unsent, True)
    assert sorted(r["id"] for r in lines_of(out)) == list(range(2000))


async def test_fleet_wait_0_writes_what_a_down_fleet_could_not_answer_as_failed(
    tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    async with fleet_of(2, model=MODEL) as fleet, make_pool(fleet) as pool:
        for k in range(2):
            await fleet.kill(k)
        summary = await run_job(pool, PROMPTS[:50], out, fleet_wait=0, check_model=False)
    assert (summary.answered, summary.failed, summary.unsent) == (0, 50, 0)
    assert summary.rate == 0.0  # failures are not counted as throughput
    assert set(summary.failures) <= {"EndpointUnavailable", "ConnectError"}


async def test_one_dead_endpoint_of_five_is_named_and_failures_are_counted_apart(
    tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    prompts = [f"short {i}" if i % 10 else "long " * 80 for i in range(1000)]
    async with fleet_of(5, model=MODEL, max_model_len=64, latency=LATENCY,
                        clock=FakeClock()) as fleet:
        await fleet.kill(2)
        async with make_pool(fleet) as pool:
            summary = await run_job(pool, prompts, out)
    dead = str(fleet.endpoints[2])
    assert (summary.answered, summary.failed) == (900, 100)
    assert summary.failures == {"PromptError": 100}
    assert summary.failures_by_endpoint == {"none": 100}  # refused before any request
    troubled = [e for e in summary.stats.endpoints if e.failures]
    assert [str(e.endpoint) for e in troubled] == [dead] and troubled[0].answered == 0
    rows = format_summary(summary, "prompts.txt").splitlines()
    assert rows[0] == "aurora-swarm run: done, with failures"
    # Named among the endpoints whose requests failed (and as benched, once it was).
    endpoints = next(row for row in rows if row.split()[0] == "endpoints")
    assert f"failed requests on {dead} (ConnectError: " in endpoints
    assert all(dead in row for row in rows if row.split()[0] == "benched")
    assert summary.rate == pytest.approx(900 / summary.elapsed)


async def test_a_bad_fleet_wait_is_refused(pool: VLLMPool, tmp_path: Path) -> None:
    for bad in (-1, "5", True, float("nan")):
        with pytest.raises(ConfigurationError, match="fleet_wait must be seconds"):
            await run_job(pool, ["a"], tmp_path / "r.jsonl", fleet_wait=bad)  # type: ignore[arg-type]
