"""Batched-dispatch settings (:class:`Chunking`) and prefix affinity (:func:`prefix_homes`).

How work is planned lives in :mod:`aurora_swarm._plan` (decisions) and
:mod:`aurora_swarm._dispatch` (the async shell that sends, waits and records).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import attrs

from ._config import Chunking
from ._exceptions import ConfigurationError

__all__ = ["Chunking", "prefix_homes"]


def _optional_positive(_inst: object, attr: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigurationError(f"Chunking.{attr.name} must be >= 1, got {value}")


def _positive(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ConfigurationError(f"Chunking.{attr.name} must be >= 1, got {value}")


def prefix_homes(texts: Sequence[str], endpoints: int, chars: int) -> tuple[list[int], list[int]]:
    """A home endpoint for each prompt, so prompts that start alike share one; and group ids.

    Prompts whose first ``chars`` characters agree form a group; every group gets one home, so
    that server's prefix cache computes the shared part (a system prompt, a rubric) once. A
    group's home is the less loaded of two stable hash choices (CRC-32, the same in every call and
    process, so a later call mostly finds its prefixes cached where it left them): balanced load,
    stable homes.

    Returns ``(homes, groups)``: ``groups[i]`` numbers prompt i's group (in order of first
    appearance), so a queue can keep a group's prompts together.
    """
    group_of: dict[str, int] = {}
    groups = [group_of.setdefault(text[:chars], len(group_of)) for text in texts]
    sizes = [0] * len(group_of)
    for group in groups:
        sizes[group] += 1
    load = [0] * endpoints
    home_of = [0] * len(group_of)
    # Largest groups first, each to the less loaded of its two hash choices.
    for key, group in sorted(group_of.items(), key=lambda item: (-sizes[item[1]], item[0])):
        data = key.encode("utf-8")
        first = zlib.crc32(data) % endpoints
        second = zlib.crc32(data, 0x9E3779B9) % endpoints
        home = first if load[first] <= load[second] else second
        home_of[group] = home
        load[home] += sizes[group]
    return [home_of[g] for g in groups], groups
