"""The ``aurora-swarm`` command line, run as a real process against a fake fleet process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aurora_swarm import parse_hostfile
from aurora_swarm.jobs import PromptFile, read_results, run_job_sync
from aurora_swarm.testing import expected_answer

# Loopback servers and subprocesses: integration tests, left out of the unit suite by
# `-m "not integration"`.
pytestmark = pytest.mark.integration

ENV = {**os.environ, "PYTHONWARNINGS": "error", "COLUMNS": "100"}
CLI = [sys.executable, "-m", "aurora_swarm.cli"]


class Fleet:
    """A fake fleet in a process of its own, as a batch job would start it."""

    def __init__(self, directory: Path, *options: str, endpoints: int = 4) -> None:
        self.hostfile = directory / f"fleet-{time.monotonic_ns()}.hostfile"
        cmd = [sys.executable, "-m", "aurora_swarm.testing", "--endpoints", str(endpoints),
               "--hostfile", str(self.hostfile), *options]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=ENV)
        deadline = time.monotonic() + 30
        while not self.hostfile.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the fleet never wrote its hostfile"
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung fleet
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    running = Fleet(tmp_path_factory.mktemp("fleet"))
    yield running
    running.stop()


@pytest.fixture
def slow_fleet(tmp_path: Path) -> Iterator[Fleet]:
    # 4 endpoints x 64 sequence slots x 40 ms a prompt: about 6,400 prompts/s at best.
    running = Fleet(tmp_path, "--prompt-time", "0.04", "--max-concurrent-seqs", "64",
                    "--request-overhead", "0.005")
    yield running
    running.stop()


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout, check=False)


def start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_lines(path: Path, proc: subprocess.Popen[str], lines: int) -> None:
    deadline = time.monotonic() + 60
    while count_lines(path) < lines:
        assert proc.poll() is None, f"the run ended before {lines} lines: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def free_base_port(count: int) -> int:
    """A port p such that p .. p + count - 1 are all free now."""
    for _ in range(100):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            for offset in range(1, count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")  # pragma: no cover


def jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- resumable runs -------------------------------------------------------------------------------


def test_sigkill_mid_run_then_rerun_writes_every_id_exactly_once(
    slow_fleet: Fleet, tmp_path: Path
) -> None:
    items: list[dict[str, Any]] = [
        {"id": f"q{i:05d}", "prompt": f"question {i} " + "w " * (i % 9)} for i in range(20_000)]
    for item in items[::5]:
        item["max_tokens"] = 3
    prompts = jsonl(tmp_path / "prompts.jsonl", items)
    out = tmp_path / "results.jsonl"
    args: list[str | Path] = ["run", prompts, "--hostfile", slow_fleet.hostfile,
                              "--model", "fake-model", "--max-tokens", "16", "-o", out,
                              "--window", "4000"]
    started = time.monotonic()
    for threshold in (2_000, 9_000):  # killed twice, at different points
        proc = start(*args)
        wait_for_lines(out, proc, threshold)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        assert threshold <= count_lines(out) < 20_000
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert "every prompt answered" in done.stdout
    skipped = int(done.stdout.split("prompts.jsonl: ")[1].split(" done before")[0])
    assert 9_000 <= skipped < 20_000
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 20_000
    assert len({r["id"] for r in records}) == 20_000
    by_id = {item["id"]: item for item in items}
    for record in records:
        item = by_id[record["id"]]
        text, reason = expected_answer(item["prompt"], item.get("max_tokens", 16))
        assert (record["success"], record["text"], record["finish_reason"]) == (True, text, reason)
        assert record["index"] == int(record["id"][1:])
    print(f"SIGKILL test: {time.monotonic() - started:.1f} s")


def test_sigterm_stops_cleanly_and_a_rerun_finishes(slow_fleet: Fleet, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"line {i}\n" for i in range(20_000)))
    out = tmp_path / "results.jsonl"
    args: list[str | Path] = ["run", prompts, "--hostfile", slow_fleet.hostfile,
                              "--model", "fake-model", "-o", out, "--progress", "none"]
    proc = start(*args)
    wait_for_lines(out, proc, 1_000)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err and "rerun the same command to continue" in err
    written = out.read_bytes()
    assert written.endswith(b"\n")  # a clean stop writes whole lines only
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    ids = [r.id for r in read_results(out)]
    assert sorted(ids) == list(range(1, 20_001))


# -- output: summary, progress, exit status -------------------------------------------------------


def test_summary_and_plain_progress_lines(fleet: Fleet, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(3000)))
    out = tmp_path / "results.jsonl"
    result = cli("run", prompts, "--hostfile", fleet.hostfile, "--model", "fake-model",
                 "-o", out, "--progress-interval", "0.05")
    assert result.returncode == 0, result.stderr
    assert "progress: 3000/3000 done (100.0%), 0 failed" in result.stderr
    assert "\r" not in result.stderr  # not a terminal: plain lines
    lines = result.stdout.splitlines()
    assert lines[0] == "aurora-swarm run: done"
    assert "3000 in " in lines[1] and "0 done before, 3000 sent now" in lines[1]
    assert [line.split()[0] for line in lines[1:]] == [
        "items", "answered", "failed", "requests", "tokens", "results"]
    assert "every prompt answered" in lines[-1]
    again = cli("run", prompts, "--hostfile", fleet.hostfile, "--model", "fake-model",
                "-o", out, "--progress", "bar")
    assert again.returncode == 0
    assert "3000 done before, 0 sent now" in again.stdout
    final = again.stderr.strip().splitlines()[-1]  # tqdm's last drawing
    assert final.startswith("aurora-swarm run: 100%") and "3000/3000" in final
    assert "failed=0" in final and "retries=0" in final


def test_failed_prompts_give_exit_status_1_and_their_cause(fleet: Fleet, tmp_path: Path) -> None:
    prompts = jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, {"prompt": "long " * 5000}])
    out = tmp_path / "results.jsonl"
    result = cli("run", prompts, "--hostfile", fleet.hostfile, "--model", "fake-model",
                 "-o", out, "--progress", "none", "--no-retry-failed")
    assert result.returncode == 1
    assert "failed    1 (PromptError: 1)" in result.stdout
    assert "1 prompts failed (their lines hold the error); rerun" in result.stdout
    again = cli("run", prompts, "--hostfile", fleet.hostfile, "--model", "fake-model",
                "-o", out, "--progress", "none", "--no-retry-failed")
    assert again.returncode == 1 and "rerun with --retry-failed" in again.stdout
    assert "2 done before, 0 sent now" in again.stdout


def test_template_chat_options_and_sampling(fleet: Fleet, tmp_path: Path) -> None:
    prompts = tmp_path / "genes.txt"
    prompts.write_text("BRCA1\nTP53\n")
    out = tmp_path / "results.jsonl"
    result = cli("run", prompts, "--hostfile", fleet.hostfile, "--model", "fake-model", "-o",
                 out, "--template", "Describe {item}", "--sampling", "temperature=0",
                 "--sampling", "seed=1", "--progress", "none")
    assert result.returncode == 0, result.stderr
    assert [r.text for r in read_results(out)] == ["ECHO: Describe BRCA1", "ECHO: Describe TP53"]


# -- errors ---------------------------------------------------------------------------------------


def run_error(fleet: Fleet, tmp_path: Path, prompts: Path, *more: str) -> str:
    out = tmp_path / "results.jsonl"
    result = cli("run", prompts, "--hostfile", fleet.hostfile, "--model", "fake-model",
                 "-o", out, *more)
    assert result.returncode == 2, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("aurora-swarm run: error: ")
    return line


def test_malformed_prompts_file_names_the_line(fleet: Fleet, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": 1, "prompt": "ok"}\n\n{"id": 2, "prompt": "x",}\n')
    line = run_error(fleet, tmp_path, prompts)
    assert f"{prompts}:3: is not valid JSON (Expecting" in line
    assert not (tmp_path / "results.jsonl").exists()


def test_duplicate_ids_and_missing_files(fleet: Fleet, tmp_path: Path) -> None:
    prompts = jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    assert "p.jsonl:2: id 'a' is used already on line 1" in run_error(fleet, tmp_path, prompts)
    missing = run_error(fleet, tmp_path, tmp_path / "nope.txt")
    assert missing.endswith("nope.txt: no such file")
    result = cli("run", prompts, "--hostfile", tmp_path / "none.hostfile", "--model", "m",
                 "-o", tmp_path / "o.jsonl")
    assert result.returncode == 2 and "none.hostfile: no such file" in result.stderr


def test_a_model_the_fleet_does_not_serve_lists_what_it_serves(
    fleet: Fleet, tmp_path: Path
) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    result = cli("run", prompts, "--hostfile", fleet.hostfile, "--model", "llama-9000",
                 "-o", tmp_path / "o.jsonl")
    assert result.returncode == 2
    assert "does not serve the model 'llama-9000'; it serves: 'fake-model'" in result.stderr


def test_an_unreachable_fleet_is_exit_status_3(tmp_path: Path) -> None:
    hostfile = tmp_path / "dead.hostfile"
    hostfile.write_text(f"127.0.0.1\t{free_port()}\n")
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    result = cli("run", prompts, "--hostfile", hostfile, "--model", "m", "-o",
                 tmp_path / "o.jsonl")
    assert result.returncode == 3
    assert "the fleet is unreachable" in result.stderr
    assert "connection failed" in result.stderr and "aurora-swarm wait" in result.stderr


def main_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line in this process (argument parsing needs no fleet)."""
    from aurora_swarm.cli import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("args", "message"), [
    (["run", "p.txt"], "the following arguments are required: --hostfile, --model, -o"),
    (["run", "p", "--hostfile", "h", "--model", "m", "-o", "o", "--window", "0"],
     "expected a whole number >= 1, got '0'"),
    (["run", "p", "--hostfile", "h", "--model", "m", "-o", "o", "--fsync-interval", "x"],
     "expected seconds >= 0 or 'never'"),
    (["run", "p", "--hostfile", "h", "--model", "m", "-o", "o", "--sampling", "t"],
     "expected KEY=VALUE"),
    (["run", "p", "--hostfile", "h", "--model", "m", "-o", "o", "--system-prompt", "x"],
     "--system-prompt needs --chat-template"),
    (["wait", "--hostfile", "h", "-o", "r", "--min", "lots"], "--min: expected a count"),
    (["wait", "--hostfile", "h", "-o", "r", "--min", "120%"], "--min: '120%' is out of range"),
    (["wait", "--hostfile", "h", "-o", "r", "--timeout", "-1"], "expected seconds >= 0"),
    (["wait", "--hostfile", "h", "-o", "r", "--expect", "0"], "--expect must be at least 1"),
])
def test_bad_arguments_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = main_of(args, capsys)
    assert code == 2
    assert message in err


# -- help -----------------------------------------------------------------------------------------


def test_help_lists_the_commands_and_explains_run_and_wait(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", ENV["COLUMNS"])  # the width help is wrapped to
    code, top, _ = main_of(["--help"], capsys)
    assert code == 0
    for command in ("run", "wait", "fleet", "demo"):
        assert f"\n    {command} " in top
    run = main_of(["run", "--help"], capsys)[1]
    assert "Rerun the same command after a crash (even kill -9)" in run
    assert "system_prompt" in run and "exit status: 0 every prompt answered" in run
    wait = main_of(["wait", "--help"], capsys)[1]
    assert "--timeout S" in wait and "--min N|P%" in wait
    assert main_of(["fleet", "--help"], capsys)[1].startswith("usage: aurora-swarm fleet")
    assert main_of([], capsys)[0] == 2
    assert cli("--help").stdout == top  # the installed module runs the same


# -- wait -----------------------------------------------------------------------------------------


def test_wait_writes_only_the_healthy_endpoints_and_times_out(
    fleet: Fleet, tmp_path: Path
) -> None:
    live = fleet.hostfile.read_text().splitlines()[:2]
    dead = f"127.0.0.1\t{free_port()}\trole=lost"
    hostfile = tmp_path / "h"
    hostfile.write_text("\n".join([live[0], dead, live[1]]) + "\n")
    ready = tmp_path / "ready"
    started = time.monotonic()
    result = cli("wait", "--hostfile", hostfile, "-o", ready, "--timeout", "1.5",
                 "--interval", "0.2")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert 1.5 <= elapsed < 8
    assert "timed out; 2 of 3 endpoints healthy (needed 3); not healthy: 127.0.0.1:" in (
        result.stderr)
    assert parse_hostfile(ready) == [parse_hostfile(fleet.hostfile)[0],
                                     parse_hostfile(fleet.hostfile)[1]]
    assert ready.read_text().startswith("# aurora-swarm wait, ")
    enough = cli("wait", "--hostfile", hostfile, "-o", ready, "--timeout", "0.5",
                 "--interval", "0.2", "--min", "60%")
    assert enough.returncode == 0, enough.stderr


def test_wait_returns_once_all_are_healthy_and_rereads_a_growing_hostfile(
    fleet: Fleet, tmp_path: Path
) -> None:
    hostfile = tmp_path / "growing.hostfile"
    ready = tmp_path / "ready"
    lines = fleet.hostfile.read_text().splitlines(keepends=True)
    proc = start("wait", "--hostfile", hostfile, "-o", ready, "--timeout", "30",
                 "--interval", "0.1", "--expect", "4")
    time.sleep(0.3)
    hostfile.write_text("".join(lines[:2]))  # the job script has started two servers so far
    time.sleep(0.3)
    assert proc.poll() is None
    hostfile.write_text("".join(lines))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "wait: 4 of 4 endpoints healthy" in err
    assert parse_hostfile(ready) == parse_hostfile(fleet.hostfile)
    quiet = cli("wait", "--hostfile", hostfile, "-o", ready, "--quiet")
    assert (quiet.returncode, quiet.stderr) == (0, "")


def test_wait_for_a_hostfile_that_never_comes(tmp_path: Path) -> None:
    result = cli("wait", "--hostfile", tmp_path / "never", "-o", tmp_path / "ready",
                 "--timeout", "0.3", "--interval", "0.1")
    assert result.returncode == 1
    assert "never: no such file" in result.stderr
    assert not (tmp_path / "ready").exists()


# -- the same from synchronous Python -------------------------------------------------------------


def test_run_job_sync_with_a_hostfile(fleet: Fleet, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("alpha beta\ngamma\n")
    summary = run_job_sync(fleet.hostfile, "fake-model", PromptFile(prompts),
                           tmp_path / "out.jsonl", pool_options={"max_tokens": 8})
    assert summary.answered == 2 and summary.complete
    assert [r.text for r in read_results(tmp_path / "out.jsonl")] == [
        "ECHO: alpha beta", "ECHO: gamma"]


# -- the cluster examples -------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["pbs_swarm.sh", "slurm_swarm.sh"])
def test_cluster_scripts_start_servers_wait_and_run(tmp_path: Path, script: str) -> None:
    # The job scripts, on one node, with fake servers in place of vLLM.
    examples = Path(__file__).resolve().parents[1] / "examples" / "cluster"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"question {i}\n" for i in range(500)))
    fake = (f"{sys.executable} -m aurora_swarm.testing --endpoints 1 --port-base {{port}} "
            f"--hostfile {tmp_path}/fake-{{port}}.hostfile")
    env = {**ENV, "MODEL": "fake-model", "PROMPTS": str(prompts), "NODES": "127.0.0.1",
           "LAUNCHER": "", "GPUS_PER_NODE": "2", "BASE_PORT": str(free_base_port(2)),
           "WAIT_INTERVAL": "0.2", "WAIT_TIMEOUT": "30", "JOBDIR": str(tmp_path / "job"),
           "SWARM_DIR": str(examples), "SERVER_CMD": fake, "RUN_ARGS": "--progress none",
           "AURORA_SWARM": " ".join(CLI)}
    done = subprocess.run(["bash", str(examples / script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    logs = [(f.name, f.read_text()[-300:]) for f in (tmp_path / "job" / "logs").iterdir()]
    assert done.returncode == 0, (done.stderr, logs)
    assert "every prompt answered" in done.stdout
    ready = parse_hostfile(tmp_path / "job" / "ready.hostfile")
    assert [e.tags["gpu"] for e in ready] == ["0", "1"]
    assert len(read_results(tmp_path / "results.jsonl")) == 500


def test_an_environment_proxy_is_named_and_can_be_bypassed(fleet: Fleet, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    env = {k: v for k, v in ENV.items() if "proxy" not in k.lower()}
    env["http_proxy"] = f"http://127.0.0.1:{free_port()}"
    args = [*CLI, "run", str(prompts), "--hostfile", str(fleet.hostfile), "--model",
            "fake-model", "-o", str(tmp_path / "o.jsonl")]
    refused = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120,
                             check=False)
    assert refused.returncode == 3
    assert "the fleet is unreachable" in refused.stderr
    assert f"through the proxy {env['http_proxy']}" in refused.stderr
    assert "no_proxy" in refused.stderr and "--no-env-proxy" in refused.stderr
    direct = subprocess.run([*args, "--no-env-proxy"], capture_output=True, text=True, env=env,
                            timeout=120, check=False)
    assert direct.returncode == 0, direct.stderr
    assert count_lines(tmp_path / "o.jsonl") == 1


def test_run_on_a_fleet_with_a_string_only_endpoint(tmp_path: Path) -> None:
    running = Fleet(tmp_path, "--strings-only", "1", endpoints=2)
    try:
        prompts = tmp_path / "p.txt"
        prompts.write_text("".join(f"question {k}\n" for k in range(50)))
        result = cli("run", prompts, "--hostfile", running.hostfile, "--model", "fake-model",
                     "-o", tmp_path / "o.jsonl", "--max-tokens", "8", "--progress", "none")
    finally:
        running.stop()
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert len(lines) == 50 and all('"ECHO: question' in line for line in lines)
