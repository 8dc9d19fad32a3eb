"""The ``aurora-swarm`` command line.

Sub-commands:

``run``
    Send a prompts file to a fleet, resumably, into a results file (``aurora-swarm run --help``).
``wait``
    Wait for a starting fleet's endpoints to answer ``/health``; write a hostfile of the
    healthy ones.
``fleet``
    Run a local fake vLLM fleet and write its hostfile (see ``aurora-swarm fleet --help``).
``demo``
    Start a local fake fleet and compare batch and non-batch ``scatter_gather`` side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from . import _cli_run, _cli_wait

    parser = argparse.ArgumentParser(
        prog="aurora-swarm",
        description="Drive a swarm of vLLM OpenAI-compatible servers.",
    )
    parser.add_argument("--version", action="version", version=f"aurora-swarm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _cli_run.add_parser(commands)
    _cli_wait.add_parser(commands)
    commands.add_parser("fleet", help="run a local fake vLLM fleet and write its hostfile",
                        add_help=False)
    demo = commands.add_parser(
        "demo", help="batch vs non-batch scatter_gather on a local fake fleet",
        description="Start a local fake vLLM fleet, run scatter_gather in batch and non-batch "
                    "mode, and print HTTP requests and time side by side.")
    demo.add_argument("--endpoints", type=int, default=8, help="fake endpoints (default 8)")
    demo.add_argument("--prompts", type=int, default=400, help="prompts (default 400)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["fleet"]:
        from .testing._cli import main as fleet_main

        return fleet_main(args_list[1:], prog="aurora-swarm fleet")
    parser = _parser()
    args = parser.parse_args(args_list)
    handler = getattr(args, "handler", None)
    if handler is not None:  # run, wait
        return int(handler(args))
    if args.command == "demo":
        if args.endpoints < 1 or args.prompts < 1:
            parser.error("--endpoints and --prompts must be at least 1")
        from ._demo import run_demo

        return run_demo(args.endpoints, args.prompts)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
