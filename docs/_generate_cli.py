"""Run the ``aurora-swarm`` commands ``cli.rst`` shows; write their output to ``_generated/cli``.

Nothing in ``cli.rst`` is typed by hand: help texts, errors, progress and summaries are what
the commands print, against a fake fleet started here (``python -m aurora_swarm.testing``).

    python docs/_generate_cli.py            # writes docs/_generated/cli/*.txt (about 20 s)

The Sphinx build runs it (``docs/_ext/aurora_examples.py``, at ``builder-inited``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "_generated" / "cli"
ENV = {**os.environ, "COLUMNS": "100", "PYTHONWARNINGS": "ignore"}
CLI = [sys.executable, "-m", "aurora_swarm.cli"]


def shown(args: list[str]) -> str:
    return "$ aurora-swarm " + " ".join(a if " " not in a else repr(a) for a in args)


def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run([*CLI, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300, check=False)
    return done.returncode, done.stdout, done.stderr


def save(name: str, text: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    print(f"wrote {OUT / name}")


def transcript(args: list[str], cwd: Path, *, status: bool = True) -> str:
    code, out, err = run(args, cwd)
    text = shown(args) + "\n" + err + out
    if status:
        text += f"$ echo $?\n{code}\n"
    return text


def start_fleet(cwd: Path, hostfile: str, *options: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "aurora_swarm.testing", "--endpoints", "8",
           "--hostfile", hostfile, *options]
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (cwd / hostfile).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the fake fleet did not start: {proc.communicate()}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        helps(work)
        # 8 endpoints x 64 sequences x 50 ms a prompt: about 10,000 prompts/s at best.
        fleet = start_fleet(work, "fleet.hostfile", "--prompt-time", "0.05",
                            "--max-concurrent-seqs", "64", "--request-overhead", "0.01",
                            "--chat-batch")
        try:
            runs(work)
            openai_batch(work)
            changes(work)
            errors(work)
            waits(work)
        finally:
            stop(fleet)
        fleet_down(work)


def helps(work: Path) -> None:
    for name, args in [("help", ["--help"]), ("run-help", ["run", "--help"]),
                       ("wait-help", ["wait", "--help"])]:
        _, out, _ = run(args, work)
        save(f"{name}.txt", shown(args) + "\n" + out)


def runs(work: Path) -> None:
    items = [{"id": f"q{i:05d}", "prompt": f"Question {i}: what is {i} squared?"}
             for i in range(40_000)]
    (work / "prompts.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    args = ["run", "prompts.jsonl", "--hostfile", "fleet.hostfile", "--model", "fake-model",
            "--max-tokens", "64", "-o", "results.jsonl", "--progress-interval", "1"]
    proc = subprocess.Popen([*CLI, *args], cwd=work, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while _lines(work / "results.jsonl") < 12_000:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    killed = shown(args) + "\n" + err + "Killed\n"
    rerun = transcript(args, work)
    save("run-killed.txt", killed)
    save("run-rerun.txt", rerun)
    first = (work / "results.jsonl").read_text().splitlines()[0]
    save("run-record.txt", json.dumps(json.loads(first), indent=2))
    bar_args = ["run", "prompts.jsonl", "--hostfile", "fleet.hostfile", "--model",
                "fake-model", "--max-tokens", "64", "-o", "again.jsonl", "--progress", "bar"]
    _, _, err = run(bar_args, work)
    frames = [f.replace("\x1b[K", "").rstrip() for f in re.split(r"[\r\n]", err) if f.strip()]
    save("run-bar.txt", shown(bar_args) + "\n" + frames[len(frames) // 2])


def openai_batch(work: Path) -> None:
    lines = []
    for i in range(4_000):
        body: dict[str, object] = {"model": "fake-model", "max_tokens": 64,
                                   "temperature": 0.0 if i % 4 else 0.7}
        if i % 2:
            body["messages"] = [{"role": "user", "content": f"Question {i}: why?"}]
        else:
            body["prompt"] = f"Question {i}: what is {i} squared?"
        lines.append({"custom_id": f"request-{i}", "method": "POST",
                      "url": "/v1/chat/completions" if i % 2 else "/v1/completions",
                      "body": body})
    (work / "batch_input.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    save("run-openai-input.txt", json.dumps(lines[1], indent=2))
    args = ["run", "batch_input.jsonl", "--hostfile", "fleet.hostfile", "--model",
            "fake-model", "-o", "batch_output.jsonl", "--progress-interval", "1"]
    save("run-openai.txt", transcript(args, work))
    first = next(json.loads(x) for x in (work / "batch_output.jsonl").read_text().splitlines()
                 if json.loads(x)["custom_id"] == "request-1")
    save("run-openai-record.txt", json.dumps(first, indent=2))


def changes(work: Path) -> None:
    """A rerun after one prompt was edited: refused, then rerun with --on-change rerun."""
    lines = (work / "prompts.jsonl").read_text().splitlines(keepends=True)
    lines[7] = json.dumps({"id": "q00007", "prompt": "Question 7: what is 7 cubed?"}) + "\n"
    (work / "prompts.jsonl").write_text("".join(lines))
    args = ["run", "prompts.jsonl", "--hostfile", "fleet.hostfile", "--model", "fake-model",
            "--max-tokens", "64", "-o", "results.jsonl", "--progress", "none"]
    save("run-changed.txt", transcript(args, work)
         + transcript([*args, "--on-change", "rerun"], work))


def fleet_down(work: Path) -> None:
    """The whole fleet killed mid-run: back after 3 s (a pause), then gone for good."""
    items = [{"id": i, "prompt": f"Summarise abstract {i}."} for i in range(12_000)]
    (work / "abstracts.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    for attempt in range(5):  # another process may take a port between the check and the bind
        port = free_base_port(8)
        options = ("--port-base", str(port), "--prompt-time", "0.05",
                   "--max-concurrent-seqs", "64")
        try:
            fleet = start_fleet(work, "down.hostfile", *options)
            break
        except RuntimeError:
            if attempt == 4:
                raise
    texts = []
    try:
        for out, wait in (("paused.jsonl", None), ("stopped.jsonl", "2")):
            args = ["run", "abstracts.jsonl", "--hostfile", "down.hostfile", "--model",
                    "fake-model", "-o", out, "--progress-interval", "1"]
            args += ["--fleet-wait", wait] if wait else []
            proc = subprocess.Popen([*CLI, *args], cwd=work, env=ENV, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            while _lines(work / out) < 4_000:
                time.sleep(0.01)
            fleet.kill()  # every server gone at once, as when their batch job ends
            fleet.communicate()
            (work / "down.hostfile").unlink()  # start_fleet waits for the new one
            if wait is None:
                time.sleep(3)
                fleet = start_fleet(work, "down.hostfile", *options)
            stdout, stderr = proc.communicate(timeout=300)
            texts.append(shown(args) + "\n" + stderr + stdout
                         + f"$ echo $?\n{proc.returncode}\n")
        fleet = start_fleet(work, "down.hostfile", *options)
        texts.append(transcript(args, work))
    finally:
        stop(fleet)
    save("run-paused.txt", texts[0])
    save("run-fleet-down.txt", texts[1] + texts[2])


def errors(work: Path) -> None:
    (work / "bad.jsonl").write_text('{"id": 1, "prompt": "fine"}\n'
                                    '{"id": 2, "prompt": "a trailing comma",}\n')
    (work / "dup.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n'
                                    '{"id": "a", "prompt": "z"}\n')
    (work / "dead.hostfile").write_text(f"127.0.0.1\t{free_port()}\n")
    base = ["--model", "fake-model", "-o", "out.jsonl"]
    shows = [
        ["run", "bad.jsonl", "--hostfile", "fleet.hostfile", *base],
        ["run", "dup.jsonl", "--hostfile", "fleet.hostfile", *base],
        ["run", "prompts.jsonl", "--hostfile", "fleet.hostfile", "--model", "llama-3-8b",
         "-o", "out.jsonl"],
        ["run", "prompts.jsonl", "--hostfile", "dead.hostfile", *base],
    ]
    save("run-errors.txt", "".join(transcript(args, work) for args in shows))


def waits(work: Path) -> None:
    lines = (work / "fleet.hostfile").read_text().splitlines()[:3]
    lines.insert(1, f"127.0.0.1\t{free_port()}\tnode=x1001c0s3b0n0")
    (work / "job.hostfile").write_text("\n".join(lines) + "\n")
    args = ["wait", "--hostfile", "job.hostfile", "--timeout", "3", "--interval", "1",
            "-o", "ready.hostfile"]
    text = transcript(args, work) + "$ cat ready.hostfile\n" + (
        work / "ready.hostfile").read_text()
    save("wait.txt", text)


def free_base_port(count: int) -> int:
    """A port p such that p .. p + count - 1 are all free now."""
    while True:
        base = free_port()
        try:
            for offset in range(1, count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


if __name__ == "__main__":
    main()
