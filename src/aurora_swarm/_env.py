"""The environment variables the library reads, all in this one place.

Each is only a fallback for an argument left out: an argument given in code always wins.

===================================== =======================================================
``AURORA_SWARM_API_KEY``              Bearer token of the servers (``api_key``; ``"EMPTY"``).
``AURORA_SWARM_MAX_TOKENS``           ``max_tokens`` of a pool (512).
``AURORA_SWARM_MAX_TOKENS_AGGREGATION`` ``max_tokens_aggregation`` (twice ``max_tokens``).
``AURORA_SWARM_MODEL_MAX_CONTEXT``    ``model_max_context`` (asked of ``/v1/models``).
``AURORA_SWARM_TIMEOUT_PER_SEQUENCE`` ``timeout_per_sequence`` of batched requests.
===================================== =======================================================

Two more kinds are read here: the variable a hostfile's ``api_key_env=NAME`` column names (that
endpoint's API key, :func:`named_key`), and, by the transport, the standard proxy variables
(``http_proxy``, ``https_proxy``, ``all_proxy``, ``no_proxy``) unless ``env_proxies=False``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from ._exceptions import ConfigurationError

__all__ = ["env_fallback", "named_key"]

T = TypeVar("T")

API_KEY = "AURORA_SWARM_API_KEY"
MAX_TOKENS = "AURORA_SWARM_MAX_TOKENS"
MAX_TOKENS_AGGREGATION = "AURORA_SWARM_MAX_TOKENS_AGGREGATION"
MODEL_MAX_CONTEXT = "AURORA_SWARM_MODEL_MAX_CONTEXT"
TIMEOUT_PER_SEQUENCE = "AURORA_SWARM_TIMEOUT_PER_SEQUENCE"


def env_fallback(value: T | None, name: str, convert: Callable[[str], T]) -> T | None:
    """``value`` when given, else the environment variable ``name`` read by ``convert``.

    A variable that is set but cannot be read raises :class:`~aurora_swarm.ConfigurationError`
    naming it, rather than being ignored.
    """
    if value is not None:
        return value
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        return convert(text.strip())
    except ValueError as exc:
        raise ConfigurationError(f"${name}={text!r} cannot be read: {exc}") from exc


def named_key(name: str) -> str | None:
    """The API key in the environment variable ``name`` (a hostfile's ``api_key_env``), or
    ``None`` when it is unset or empty."""
    return os.environ.get(name) or None
