"""Run the fake vLLM fleet in its own process, so the client measured here has a core to itself.

A fleet in the client's own event loop would share one core with the client and its timings
would mix both; a separate process keeps the fleet's latency model honest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from aurora_swarm import Endpoint, parse_hostfile


@contextlib.contextmanager
def fleet_process(
    endpoints: int,
    *,
    request_overhead: float = 0.0,
    prompt_time: float = 0.0,
    token_time: float = 0.0,
    max_concurrent_seqs: int = 0,
    slow: Mapping[int, float] | None = None,
    fault_rate: float = 0.0,
    seed: int = 0,
    extra: Sequence[str] = (),
    start_timeout: float = 120.0,
    log_file: str | os.PathLike[str] | None = None,
) -> Iterator[list[Endpoint]]:
    """Start ``python -m aurora_swarm.testing`` and yield its endpoints; stop it afterwards.

    The fleet's stderr goes to ``log_file`` (by default a temporary file, removed afterwards).
    """
    with tempfile.TemporaryDirectory(prefix="aurora-fleet-") as tmp:
        hostfile = Path(tmp) / "fleet.hostfile"
        command = [
            sys.executable, "-m", "aurora_swarm.testing",
            "--endpoints", str(endpoints), "--hostfile", str(hostfile),
            "--request-overhead", str(request_overhead), "--prompt-time", str(prompt_time),
            "--token-time", str(token_time), "--max-concurrent-seqs", str(max_concurrent_seqs),
            "--fault-rate", str(fault_rate), "--seed", str(seed), *extra,
        ]
        for index, factor in (slow or {}).items():
            command += ["--slow", f"{index}:{factor}"]
        # stderr goes to a file, not a pipe: nobody reads a pipe while the fleet serves, and a
        # full pipe buffer would block the fleet's next log line (and with it, the whole fleet).
        log_path = Path(log_file) if log_file is not None else Path(tmp) / "fleet.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + start_timeout
            while not hostfile.exists():
                if process.poll() is not None:
                    error = log_path.read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"fake fleet exited with {process.returncode}: {error}")
                if time.monotonic() > deadline:
                    raise TimeoutError("fake fleet did not write its hostfile in time")
                time.sleep(0.05)
            time.sleep(0.05)  # the hostfile is written last; give the write a moment to finish
            yield parse_hostfile(hostfile)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    times = os.times()
    return times.user + times.system
