"""``on_result`` and ``progress`` for patterns, over any :class:`~aurora_swarm.patterns.Pool`.

A pattern asks its pool for ``on_result`` only when the caller wants results as they settle or
a bar, so pools whose ``send_all_batched`` takes just ``(prompts, max_tokens)`` keep working for
everything else.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence

from .._exceptions import ConfigurationError
from .._progress import ProgressSetting, check_progress, open_bar
from .._response import Response
from ._base import Pool

__all__ = ["ResultHook", "labelled", "send", "tracking"]

ResultHook = Callable[[int, Response], None]


def _takes_on_result(pool: Pool) -> bool:
    try:
        parameters = inspect.signature(pool.send_all_batched).parameters
    except (TypeError, ValueError):
        return True  # cannot tell: let the call say
    return "on_result" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _retries_of(pool: Pool) -> Callable[[], int] | None:
    stats = getattr(pool, "stats", None)
    if stats is None or not callable(stats):
        return None
    try:
        int(stats().retries)
    except (AttributeError, TypeError, ValueError):
        return None
    return lambda: int(stats().retries)


def labelled(progress: ProgressSetting, what: str, label: str) -> ProgressSetting:
    """``progress`` for one part of a pattern: its bar reads ``"<desc or what> <label>"``."""
    check_progress(progress)
    if progress is None or progress is False:
        return False
    options = dict(progress) if not isinstance(progress, bool) else {}
    options["desc"] = f"{options.get('desc', what)} {label}"
    return options


@contextlib.contextmanager
def tracking(
    pool: Pool, progress: ProgressSetting, on_result: ResultHook | None, total: int, desc: str,
) -> Iterator[ResultHook | None]:
    """The hook to hand the pool: a bar (which calls ``on_result``), ``on_result``, or None."""
    check_progress(progress)
    wants_bar = progress is not None and progress is not False
    if (wants_bar or on_result is not None) and not _takes_on_result(pool):
        raise ConfigurationError(
            f"on_result= and progress= need a pool whose send_all_batched takes on_result=; "
            f"{type(pool).__name__}.send_all_batched does not")
    bar = open_bar(progress, total, desc, retries=_retries_of(pool), hook=on_result)
    try:
        yield bar or on_result
    finally:
        if bar is not None:
            bar.close()


async def send(
    pool: Pool, prompts: Sequence[str], max_tokens: int | None, hook: ResultHook | None,
) -> list[Response]:
    """``pool.send_all_batched``, with ``on_result`` only when there is a hook."""
    if hook is None:
        return list(await pool.send_all_batched(prompts, max_tokens))
    return list(await pool.send_all_batched(  # type: ignore[call-arg]
        prompts, max_tokens, on_result=hook))
