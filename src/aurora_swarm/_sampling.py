"""Request fields a pool's ``sampling=`` may set, checked against the OpenAI request schema.

Fields the OpenAI completions and chat schemas (and vLLM's common extensions) define are
checked for type and range, so ``temperature="hot"`` fails at once with the field named instead
of as a 400 from every server. Other fields pass unchecked: vLLM takes many more
(``guided_json``, ``min_tokens``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ._exceptions import ConfigurationError

__all__ = ["check_sampling_values"]


def _number(low: float | None = None, high: float | None = None, *,
            open_low: bool = False) -> tuple[Callable[[Any], bool], str]:
    def ok(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return False
        if low is not None and (value <= low if open_low else value < low):
            return False
        return high is None or value <= high

    if low is not None and high is not None:
        bounds = f" in {'(' if open_low else '['}{low:g}, {high:g}]"
    elif low is not None:
        bounds = f" {'>' if open_low else '>='} {low:g}"
    else:
        bounds = ""
    return ok, f"a number{bounds}"


def _integer(low: int | None = None) -> tuple[Callable[[Any], bool], str]:
    def ok(value: Any) -> bool:
        return (not isinstance(value, bool) and isinstance(value, int)
                and (low is None or value >= low))

    return ok, "an integer" + (f" >= {low}" if low is not None else "")


def _stop(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value))


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "temperature": _number(0),
    "top_p": _number(0, 1, open_low=True),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "repetition_penalty": _number(0, open_low=True),
    "min_p": _number(0, 1),
    "top_k": _integer(-1),
    "seed": _integer(),
    "logprobs": _integer(0),
    "best_of": _integer(1),
    "stop": (_stop, "a string or a list of strings"),
    "echo": (_flag, "true or false"),
    "ignore_eos": (_flag, "true or false"),
    "skip_special_tokens": (_flag, "true or false"),
}


def check_sampling_values(sampling: Mapping[str, Any]) -> None:
    """Raise :class:`~aurora_swarm.ConfigurationError` naming the first field whose value the
    request schema does not allow."""
    for key, value in sampling.items():
        rule = _RULES.get(key)
        if rule is not None and not rule[0](value):
            raise ConfigurationError(
                f"sampling {key} must be {rule[1]}, got {value!r}")
