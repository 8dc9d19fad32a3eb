"""The ``fleet`` command: run a fake fleet until SIGINT or SIGTERM, with a hostfile for clients."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ._behavior import EndpointBehavior
from ._fleet import FakeFleet
from ._latency import LatencyModel

__all__ = ["main", "serve_fleet"]


async def serve_fleet(
    fleet: FakeFleet,
    hostfile: str | os.PathLike[str],
    *,
    stop: asyncio.Event | None = None,
    tags: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
    announce: Callable[[FakeFleet, Path], object] | None = None,
) -> None:
    """Start ``fleet``, write its hostfile, and serve until ``stop`` is set; then close it.

    Parameters
    ----------
    fleet : FakeFleet
        A fleet not started yet.
    hostfile : str or ``os.PathLike``
        Where to write the hostfile (see :meth:`FakeFleet.write_hostfile
        <aurora_swarm.testing.FakeFleet.write_hostfile>`).
    stop : ``asyncio.Event`` or None
        Serve until this event is set; ``None`` serves until the task is cancelled.
    tags : Mapping, Sequence of Mapping, or None
        More ``key=value`` columns for the hostfile.
    announce : Callable or None
        Called as ``announce(fleet, path)`` once the fleet listens and the hostfile is written.
    """
    async with fleet:
        path = fleet.write_hostfile(hostfile, tags)
        if announce is not None:
            announce(fleet, path)
        await (stop if stop is not None else asyncio.Event()).wait()


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run the fake fleet command; return its exit status.

    ``python -m aurora_swarm.testing --endpoints 8 --hostfile fleet.hostfile`` starts 8 fake
    endpoints, writes ``fleet.hostfile``, prints one line saying where, and serves until SIGINT or
    SIGTERM. ``--help`` lists every option.

    Parameters
    ----------
    argv : list of str or None
        The arguments, without the program name; ``None`` reads ``sys.argv``.
    prog : str or None
        The program name shown in help and errors.

    Returns
    -------
    int
        0 after a clean shutdown, 1 when the fleet cannot start.
    """
    args = _parser(prog).parse_args(argv)
    _raise_open_file_limit(4 * args.endpoints + 64)
    try:
        fleet = _fleet(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_signal(fleet, args.hostfile, dict(args.tag)))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signal(fleet: FakeFleet, hostfile: str, tags: dict[str, str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    written: list[Path] = []

    def announce(fleet: FakeFleet, path: Path) -> None:
        written.append(path)
        _announce(fleet, path)

    try:
        await serve_fleet(fleet, hostfile, stop=stop, tags=tags or None, announce=announce)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for path in written:  # the fleet is gone: a hostfile left behind would list dead ports
            with contextlib.suppress(OSError):
                path.unlink()


def _announce(fleet: FakeFleet, path: Path) -> None:
    ports = [e.port for e in fleet.endpoints]
    host = fleet.endpoints[0].host
    print(
        f"aurora-swarm fake fleet: {len(fleet)} endpoints serving {fleet.model!r} on "
        f"{host} {port_list(ports)} (started in {fleet.startup_seconds:.2f} s); "
        f"hostfile {path} (removed when the fleet stops); stop with Ctrl-C or SIGTERM",
        flush=True,
    )


def port_list(ports: Sequence[int], shown: int = 8) -> str:
    """``"port 8000"``, ``"ports 8000-8003"``, ``"ports 41003, 41517-41518"``: runs of
    consecutive ports joined, the first ``shown`` runs listed and the rest counted."""
    runs: list[list[int]] = []
    for port in sorted(ports):
        if runs and port == runs[-1][-1] + 1:
            runs[-1].append(port)
        else:
            runs.append([port])
    parts = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs[:shown]]
    if len(runs) > shown:
        parts.append(f"and {sum(len(r) for r in runs[shown:])} more")
    return ("port " if len(ports) == 1 else "ports ") + ", ".join(parts)


def _fleet(args: argparse.Namespace) -> FakeFleet:
    latency = LatencyModel(
        request_overhead=args.request_overhead,
        prompt_time=args.prompt_time,
        token_time=args.token_time,
        max_concurrent_seqs=args.max_concurrent_seqs,
    )
    slowness = dict(args.slow)
    for index in slowness:
        if not 0 <= index < args.endpoints:
            raise ValueError(f"--slow names endpoint {index}, out of range 0..{args.endpoints - 1}")
    plain = set(args.strings_only)
    for index in plain:
        if not 0 <= index < args.endpoints:
            raise ValueError(
                f"--strings-only names endpoint {index}, out of range 0..{args.endpoints - 1}"
            )
    behaviors = [
        EndpointBehavior(
            slowness=slowness.get(i, 1.0),
            fault_rate=args.fault_rate,
            seed=args.seed,
            list_prompts=i not in plain,
            vllm_extras=i not in plain,
        )
        for i in range(args.endpoints)
    ]
    ports = None
    if args.port_base is not None:
        ports = list(range(args.port_base, args.port_base + args.endpoints))
    return FakeFleet(
        args.endpoints,
        model=args.model,
        max_model_len=args.max_model_len,
        latency=latency,
        behaviors=behaviors,
        chat_batch=args.chat_batch,
        model_root=args.model_root,
        host=args.host,
        ports=ports,
        metrics=args.metrics,
    )


def _parser(prog: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m aurora_swarm.testing",
        description="Run fake vLLM OpenAI-compatible servers on loopback ports, for tests, "
        "demos and CPU benchmarks. Writes a hostfile and serves until SIGINT or SIGTERM.",
    )
    p.add_argument("--endpoints", type=_positive_int, default=4, help="how many (default 4)")
    p.add_argument("--hostfile", required=True, help="where to write the hostfile")
    p.add_argument("--model", default="fake-model", help="served model name")
    p.add_argument("--model-root", default=None, help="root shown by /v1/models")
    p.add_argument("--max-model-len", type=_positive_int, default=4096, help="context length")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument(
        "--port-base",
        type=_positive_int,
        default=None,
        help="endpoint i listens on PORT_BASE + i (default: free ports)",
    )
    p.add_argument(
        "--request-overhead", type=float, default=0.0, metavar="S", help="seconds per request"
    )
    p.add_argument(
        "--prompt-time",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds one prompt holds a sequence slot",
    )
    p.add_argument(
        "--token-time", type=float, default=0.0, metavar="S", help="extra seconds per output token"
    )
    p.add_argument(
        "--max-concurrent-seqs",
        type=int,
        default=0,
        metavar="N",
        help="sequence slots per endpoint (0: unlimited)",
    )
    p.add_argument(
        "--slow",
        type=_slow,
        action="append",
        default=[],
        metavar="I:F",
        help="endpoint I is F times slower (repeatable)",
    )
    p.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="probability of a transient fault (500, 503, 429, drop) per request",
    )
    p.add_argument(
        "--strings-only",
        type=int,
        action="append",
        default=[],
        metavar="I",
        help="endpoint I takes one string prompt a request and has no /health, /tokenize or "
        "max_model_len, as Ollama or llama-cpp-python (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    p.add_argument("--chat-batch", action="store_true", help="serve /v1/chat/completions/batch")
    p.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="answer GET /metrics with 404, like a server without metrics",
    )
    p.add_argument(
        "--tag",
        type=_tag,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra hostfile column on every line (repeatable)",
    )
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def _slow(text: str) -> tuple[int, float]:
    index, sep, factor = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(index), float(factor)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected INDEX:FACTOR such as 0:3.0, got {text!r}"
        ) from None


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _raise_open_file_limit(needed: int) -> None:
    """Raise the soft open-file limit towards ``needed``: each endpoint and connection is a file."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), hard))
    if target < needed:
        print(
            f"warning: the open-file limit is {hard}; {needed} would be safer for this many "
            "endpoints and their connections",
            file=sys.stderr,
        )
