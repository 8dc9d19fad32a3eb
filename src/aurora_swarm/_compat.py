"""Settings a pool takes in the earlier system's spelling, turned into ours.

Code written for the earlier Aurora-Swarm passes ``concurrency=``, ``max_tokens_aggregation=``,
``timeout_per_sequence=`` and the like; this module reads them (with their environment-variable
fallbacks, see :mod:`aurora_swarm._env`) into the objects the pool runs on.
"""

from __future__ import annotations

import attrs

from . import _env
from ._config import Timeouts
from ._env import env_fallback
from ._exceptions import ConfigurationError

__all__ = ["DEFAULT_MODEL", "PoolLimits", "batch_timeouts", "one_of"]

DEFAULT_MODEL = "openai/gpt-oss-120b"
"""The model a pool asks for when none is named (the earlier system's default)."""

DEFAULT_MAX_TOKENS = 512
DEFAULT_BUFFER = 512  # the earlier system's default
_EARLIER_TIMEOUT_PER_SEQUENCE = 60.0
_EARLIER_BATCH_CONCURRENCY = 256


def _positive(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")


@attrs.frozen
class PoolLimits:
    """Token limits of a pool: per answer, per merge step, and the context."""

    max_tokens: int
    max_tokens_aggregation: int
    model_max_context: int | None
    buffer: int

    @classmethod
    def resolve(
        cls, *, max_tokens: int | None, max_tokens_aggregation: int | None,
        model_max_context: int | None, buffer: int | None,
    ) -> PoolLimits:
        """Arguments first, then the environment, then the defaults; checked."""
        tokens = env_fallback(max_tokens, _env.MAX_TOKENS, int)
        tokens = DEFAULT_MAX_TOKENS if tokens is None else tokens
        _positive(tokens, "max_tokens")
        aggregation = env_fallback(max_tokens_aggregation, _env.MAX_TOKENS_AGGREGATION, int)
        aggregation = aggregation if aggregation is not None else 2 * tokens
        _positive(aggregation, "max_tokens_aggregation")
        context = env_fallback(model_max_context, _env.MODEL_MAX_CONTEXT, int)
        if context is not None:
            _positive(context, "model_max_context")
        if buffer is None:
            # The default never refuses a prompt (see ContextSizer), so a short context is fine.
            return cls(tokens, aggregation, context, DEFAULT_BUFFER)
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 0:
            raise ConfigurationError(f"buffer must be an int >= 0, got {buffer!r}")
        if context is not None and buffer >= context:
            raise ConfigurationError(
                f"buffer ({buffer}) leaves no room in a context of {context} tokens")
        return cls(tokens, aggregation, context, buffer)


@attrs.frozen
class CappedTimeouts(Timeouts):
    """:class:`~aurora_swarm.Timeouts` whose batched requests never get more than ``cap``."""

    cap: float = float("inf")

    def for_chunk(self, prompts: int) -> float | None:
        """The time limit of a request carrying ``prompts`` prompts, at most ``cap``."""
        limit = super().for_chunk(prompts)
        return self.cap if limit is None else min(limit, self.cap)


def batch_timeouts(
    timeout: float | Timeouts, *, batch_concurrency: int | None,
    timeout_per_sequence: float | None, batch_timeout_cap: float | None,
) -> Timeouts:
    """The pool's :class:`~aurora_swarm.Timeouts` from ``timeout`` and the earlier knobs.

    The earlier system gave a batch of ``n`` prompts ``ceil(n / batch_concurrency)`` waves of
    ``timeout_per_sequence`` seconds each; here that is ``timeout_per_sequence /
    batch_concurrency`` seconds per prompt on top of ``timeout``.
    """
    timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts(request=timeout)
    per_sequence = env_fallback(timeout_per_sequence, _env.TIMEOUT_PER_SEQUENCE, float)
    if per_sequence is not None or batch_concurrency is not None:
        per_sequence = _EARLIER_TIMEOUT_PER_SEQUENCE if per_sequence is None else per_sequence
        waves = _EARLIER_BATCH_CONCURRENCY if batch_concurrency is None else batch_concurrency
        _positive(waves, "batch_concurrency")
        if per_sequence <= 0:
            raise ConfigurationError(
                f"timeout_per_sequence must be > 0 seconds, got {per_sequence!r}")
        timeouts = attrs.evolve(timeouts, per_prompt=per_sequence / waves)
    if batch_timeout_cap is not None:
        if batch_timeout_cap <= 0:
            raise ConfigurationError(
                f"batch_timeout_cap must be > 0 seconds, got {batch_timeout_cap!r}")
        timeouts = CappedTimeouts(connect=timeouts.connect, request=timeouts.request,
                                  per_prompt=timeouts.per_prompt, cap=batch_timeout_cap)
    return timeouts


def one_of(name: str, value: int | None, earlier: str, earlier_value: int | None) -> int | None:
    """The value of a setting that has our name and an earlier one; both given is an error."""
    if value is not None and earlier_value is not None and value != earlier_value:
        raise ConfigurationError(f"give {name}= or {earlier}=, not both")
    return value if value is not None else earlier_value
