"""``aurora-swarm run`` never reports a wrong success: changed prompts, a fleet that goes away."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aurora_swarm.jobs import read_results
from aurora_swarm.testing import expected_answer

from .test_cli import Fleet, cli, free_base_port, main_of, start, wait_for_lines

# A fake fleet in a process of its own and the command line run as a process: integration tests,
# left out of the unit suite by `-m "not integration"`; the usage errors need neither.
INTEGRATION = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    running = Fleet(tmp_path_factory.mktemp("fleet"))
    yield running
    running.stop()


@INTEGRATION
def test_edited_prompts_stop_the_rerun_until_told_what_to_do(
    fleet: Fleet, tmp_path: Path
) -> None:
    prompts, out = tmp_path / "prompts.txt", tmp_path / "results.jsonl"
    prompts.write_text("".join(f"Question {i}\n" for i in range(50)))
    base = ["run", prompts, "--hostfile", fleet.hostfile, "--model", "fake-model", "-o", out,
            "--progress", "none"]
    assert cli(*base).returncode == 0
    prompts.write_text("".join(f"A totally different question {i}\n" for i in range(50)))
    before = out.read_bytes()
    refused = cli(*base, "--max-tokens", "7")
    assert refused.returncode == 5, refused.stderr
    assert "holds results for 50 items whose prompt or settings" in refused.stderr
    assert "Nothing was sent" in refused.stderr and "--on-change rerun" in refused.stderr
    assert out.read_bytes() == before and refused.stdout == ""
    rerun = cli(*base, "--max-tokens", "7", "--on-change", "rerun")
    assert rerun.returncode == 0, rerun.stderr
    assert "0 done before, 50 sent now" in rerun.stdout
    assert "  changed   50 prompts changed since their result was written: sent again" in (
        rerun.stdout)
    assert [r.text for r in read_results(out)] == [
        expected_answer(f"A totally different question {i}", 7)[0] for i in range(50)]
    prompts.write_text("".join(f"A totally different question {i}\n" for i in range(40)))
    shorter = cli(*base, "--max-tokens", "7")
    assert shorter.returncode == 0, shorter.stderr
    assert "10 ids in the results file are no longer in" in shorter.stdout


def start_fleet(directory: Path, base: int) -> Fleet:
    # 4 endpoints x 16 slots x 50 ms a prompt: about 1,300 prompts/s.
    return Fleet(directory, "--prompt-time", "0.05", "--max-concurrent-seqs", "16",
                 "--port-base", str(base))


def first_fleet(directory: Path) -> tuple[Fleet, int]:
    """A fleet on 4 consecutive free ports (another process may take one between the check
    and the bind: then try other ports)."""
    for attempt in range(5):
        base = free_base_port(4)
        try:
            return start_fleet(directory, base), base
        except AssertionError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


@INTEGRATION
def test_a_fleet_killed_and_restarted_on_its_ports_pauses_the_run(tmp_path: Path) -> None:
    fleet, base = first_fleet(tmp_path)
    prompts, out = tmp_path / "prompts.txt", tmp_path / "results.jsonl"
    prompts.write_text("".join(f"line {i}\n" for i in range(6000)))
    run = start("run", prompts, "--hostfile", fleet.hostfile, "--model", "fake-model", "-o", out,
                "--progress", "lines", "--progress-interval", "0.5", "--window", "1000")
    try:
        wait_for_lines(out, run, 1000)
        fleet.proc.kill()  # SIGKILL: every server gone at once
        fleet.proc.communicate()
        killed = time.monotonic()
        assert run.stderr is not None
        seen = []
        for line in run.stderr:  # the run says it is paused (the pool first tries them all)
            seen.append(line)
            if "PAUSED" in line:
                break
        paused_after = time.monotonic() - killed
        time.sleep(max(0.0, 3 - paused_after))
        assert run.poll() is None  # paused, not ended
        written = out.read_bytes().count(b"\n")
        fleet = start_fleet(tmp_path, base)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        fleet.stop()
    print(f"paused {paused_after:.1f} s after the kill")
    assert run.returncode == 0, stderr
    assert "every endpoint is down; probing" in seen[-1] and written < 6000
    assert "every prompt answered" in stdout and "  paused " in stdout
    ids = [r.id for r in read_results(out)]
    assert sorted(ids) == list(range(1, 6001)) and out.read_bytes().count(b"\n") == 6000


@INTEGRATION
def test_a_fleet_that_stays_down_exits_4_and_a_rerun_finishes(tmp_path: Path) -> None:
    fleet, base = first_fleet(tmp_path)
    prompts, out = tmp_path / "prompts.txt", tmp_path / "results.jsonl"
    prompts.write_text("".join(f"line {i}\n" for i in range(6000)))
    args: list[str | Path] = ["run", prompts, "--hostfile", fleet.hostfile, "--model",
                              "fake-model", "-o", out, "--progress", "none", "--fleet-wait", "2"]
    run = start(*args)
    wait_for_lines(out, run, 1000)
    fleet.proc.kill()
    fleet.proc.communicate()
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 4, stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    sent = len(records)
    assert all(r["success"] for r in records)  # nothing unsent was written as failed
    assert f"{sent} sent, {6000 - sent} left unsent; rerun the same command" in stderr
    assert stdout.startswith("aurora-swarm run: stopped, the fleet is down")
    fleet = start_fleet(tmp_path, base)
    try:
        again = cli(*args)
    finally:
        fleet.stop()
    assert again.returncode == 0, again.stderr
    assert f"{sent} done before, {6000 - sent} sent now" in again.stdout
    assert sorted(r.id for r in read_results(out)) == list(range(1, 6001))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--fleet-wait", "never", "expected seconds >= 0, got 'never'"),
    ("--fleet-wait", "-1", "expected seconds >= 0, got '-1'"),
    ("--on-change", "ignore", "invalid choice: 'ignore'"),
])
def test_bad_fleet_wait_and_on_change_are_usage_errors(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = main_of(["run", "p", "--hostfile", "h", "--model", "m", "-o", "o", option,
                            value], capsys)
    assert code == 2 and message in err
