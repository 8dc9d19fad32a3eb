"""``python -m aurora_swarm.testing``: run a fake fleet until SIGINT or SIGTERM."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
