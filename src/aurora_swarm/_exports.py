"""Make re-exported names report the public module they are used from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["own_exports"]


def own_exports(module: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Set ``__module__`` of the classes and functions ``names`` defined in private modules.

    Reprs, tracebacks and help then show ``aurora_swarm.VLLMPool`` rather than
    ``aurora_swarm._pool.VLLMPool``; pickling finds the class there too. Names defined in a
    public module (``aurora_swarm.patterns.scatter_gather``) keep their module, and values
    that are neither classes nor functions (constants, type aliases) are left alone.
    """
    for name in names:
        obj = namespace[name]
        if not (isinstance(obj, type) or (callable(obj) and hasattr(obj, "__code__"))):
            continue
        defined_in = getattr(obj, "__module__", "") or ""
        if not defined_in.startswith("aurora_swarm."):
            continue
        if any(part.startswith("_") for part in defined_in.split(".")):
            obj.__module__ = module
