"""``aurora-swarm wait``: poll a starting fleet's ``/health``; write a hostfile of the healthy."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import anyio

from ._endpoint import Endpoint
from ._exceptions import HostfileError
from ._hostfile import parse_hostfile
from ._transport import Transport, proxy_note

__all__ = ["add_parser", "main", "probe_all", "write_hostfile"]

_PROBE_CONCURRENCY = 256

_DESCRIPTION = """\
Wait for the endpoints of a hostfile to answer /health, then write a hostfile of the healthy
ones (same order, same tags) for `aurora-swarm run`. Made for fleets started by a batch job,
whose servers come up over minutes: the hostfile is read again on every round, so it may still
be growing (and may not exist yet) when the wait starts.

The wait ends when every listed endpoint is healthy (and, with --expect, at least that many are
listed), or after --timeout seconds. READY is written either way, with the endpoints healthy at
the end (a '#' comment line on top says how many of how many)."""

_EPILOG = """\
exit status: 0 at least --min endpoints healthy; 1 fewer (timed out), or the hostfile never
became readable; 2 bad arguments.

example (a PBS or Slurm job script):
  aurora-swarm wait --hostfile $JOBDIR/fleet.hostfile --expect 64 --min 90% \\
      --timeout 1800 -o $JOBDIR/ready.hostfile
"""


def add_parser(commands: Any) -> None:
    """Add the ``wait`` sub-command to an ``argparse`` sub-parsers object."""
    p = commands.add_parser(
        "wait", help="wait for a starting fleet; write a hostfile of its healthy endpoints",
        description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=lambda args: main(args, p))
    p.add_argument("--hostfile", required=True, metavar="H", help="the fleet's hostfile")
    p.add_argument("-o", "--output", required=True, metavar="READY",
                   help="where to write the hostfile of healthy endpoints")
    p.add_argument("--timeout", type=_seconds, default=600.0, metavar="S",
                   help="give up waiting after S seconds (default 600)")
    p.add_argument("--interval", type=_seconds, default=5.0, metavar="S",
                   help="seconds between rounds of probes (default 5)")
    p.add_argument("--expect", type=int, default=None, metavar="N",
                   help="keep waiting until the hostfile lists at least N endpoints")
    p.add_argument("--min", default=None, metavar="N|P%",
                   help="healthy endpoints needed for exit status 0: a count, or a percentage "
                        "of those listed or expected (default: all of them)")
    p.add_argument("--probe-timeout", type=_seconds, default=5.0, metavar="S",
                   help="seconds one /health probe may take (default 5)")
    p.add_argument("--env-proxy", action=argparse.BooleanOptionalAction, default=True,
                   help="probe through the proxy http_proxy / https_proxy / all_proxy name, "
                        "minus no_proxy hosts (default: yes; --no-env-proxy probes directly)")
    p.add_argument("--quiet", action="store_true", help="print only errors")


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the ``wait`` sub-command; return the exit status."""
    try:
        minimum = _minimum(args.min)
    except ValueError as exc:
        parser.error(str(exc))
    if args.expect is not None and args.expect < 1:
        parser.error("--expect must be at least 1")
    out = None if args.quiet else sys.stderr
    return anyio.run(_wait, args, minimum, out)


async def _wait(args: argparse.Namespace, minimum: tuple[float, bool] | None,
                out: TextIO | None) -> int:
    start = time.monotonic()
    deadline = start + args.timeout
    transport = Transport(api_key="EMPTY", connect_timeout=args.probe_timeout,
                          max_connections=_PROBE_CONCURRENCY, env_proxies=args.env_proxy)
    endpoints: list[Endpoint] = []
    healthy: list[Endpoint] = []
    problem: str | None = None
    reported: tuple[int, int] | None = None
    try:
        while True:
            try:
                endpoints = parse_hostfile(args.hostfile)
                problem = None
            except HostfileError as exc:  # not written yet, or a line still being written
                problem = str(exc)
            if endpoints:
                healthy = await probe_all(transport, endpoints, args.probe_timeout)
            now = time.monotonic()
            counts = (len(healthy), len(endpoints))
            if out is not None and counts != reported:
                reported = counts
                print(f"wait: {counts[0]} of {counts[1]} endpoints healthy after "
                      f"{now - start:.0f} s", file=out, flush=True)
            listed_enough = args.expect is None or len(endpoints) >= args.expect
            if (endpoints and problem is None and listed_enough
                    and len(healthy) == len(endpoints)):
                break
            if now >= deadline:
                break
            await anyio.sleep(min(args.interval, max(0.0, deadline - now)))
    finally:
        await transport.aclose()
    down = [e for e in endpoints if e not in set(healthy)]
    proxies = {p for e in down if (p := transport.proxy_for(e)) is not None}
    if proxies:
        print("wait: the endpoints not healthy were probed" + proxy_note(min(proxies),
                                                                     "--no-env-proxy"),
              file=sys.stderr)
    return _finish(args, minimum, endpoints, healthy, problem,
                   time.monotonic() >= deadline, out)


def _finish(args: argparse.Namespace, minimum: tuple[float, bool] | None,
            endpoints: list[Endpoint], healthy: list[Endpoint], problem: str | None,
            timed_out: bool, out: TextIO | None) -> int:
    if not endpoints and problem is not None:
        print(f"aurora-swarm wait: error: {problem}", file=sys.stderr)
        return 1
    base = max(len(endpoints), args.expect or 0)
    if minimum is None:
        needed = base
    else:
        needed = math.ceil(minimum[0] * base / 100) if minimum[1] else int(minimum[0])
    needed = max(needed, 1)
    write_hostfile(args.output, healthy, f"{len(healthy)} of {len(endpoints)} endpoints of "
                                         f"{args.hostfile} healthy")
    ok = len(healthy) >= needed
    if out is not None or not ok:
        down = [e for e in endpoints if e not in set(healthy)]
        how = "timed out; " if timed_out and (down or problem) else ""
        listing = "" if not down else "; not healthy: " + ", ".join(map(str, down[:10])) + (
            f" and {len(down) - 10} more" if len(down) > 10 else "")
        print(f"wait: {how}{len(healthy)} of {len(endpoints)} endpoints healthy "
              f"(needed {needed}){listing}; wrote {args.output}",
              file=sys.stderr if not ok else out)
    return 0 if ok else 1


async def probe_all(transport: Transport, endpoints: list[Endpoint],
                    timeout: float) -> list[Endpoint]:
    """The endpoints whose ``/health`` answers 200 within ``timeout``, in the given order.

    An endpoint without ``/health`` (404 or 405) counts as healthy when ``/v1/models`` answers.
    """
    ok = [False] * len(endpoints)
    limiter = anyio.CapacityLimiter(_PROBE_CONCURRENCY)

    async def probe(k: int) -> None:
        async with limiter:
            status = await transport.health_status(endpoints[k], timeout)
            if status in (404, 405):  # not vLLM: a server without /health lists its models
                status = await transport.models_status(endpoints[k], timeout)
            ok[k] = status == 200

    async with anyio.create_task_group() as group:
        for k in range(len(endpoints)):
            group.start_soon(probe, k)
    return [e for e, good in zip(endpoints, ok, strict=True) if good]


def write_hostfile(path: str | os.PathLike[str], endpoints: list[Endpoint], note: str) -> None:
    """Write ``endpoints`` as a hostfile that :func:`~aurora_swarm.parse_hostfile` reads back.

    The file is written whole and renamed into place, so a reader never sees half of it.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"# aurora-swarm wait, {stamp}: {note}\n"]
    for endpoint in endpoints:
        plain = endpoint.scheme == "http" and endpoint.path == "/v1"
        address = [endpoint.host, str(endpoint.port)] if plain else [endpoint.base_url]
        if ":" in endpoint.host and plain:
            address = [f"[{endpoint.host}]:{endpoint.port}"]
        columns = address + [f"{key}={value}" for key, value in endpoint.tags.items()]
        lines.append("\t".join(columns) + "\n")
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    partial.write_text("".join(lines), encoding="utf-8")
    os.replace(partial, target)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _minimum(text: str | None) -> tuple[float, bool] | None:
    if text is None:
        return None
    percent = text.endswith("%")
    try:
        value = float(text[:-1]) if percent else int(text)
    except ValueError:
        raise ValueError(f"--min: expected a count or a percentage such as 90%, got {text!r}"
                         ) from None
    if value < 0 or (percent and value > 100):
        raise ValueError(f"--min: {text!r} is out of range")
    return value, percent
