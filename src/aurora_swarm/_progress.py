"""Progress bars for long calls, drawn by ``tqdm.auto``: a widget in Jupyter, a bar on a terminal.

A bar is driven by the ``on_result`` hook every batched call already has: one ``update`` per
settled prompt (tqdm redraws at most a few times a second, so the cost is a counter and a clock
read). The bar shows done / total, prompts/s and the ETA (tqdm's own), plus the prompts that
failed and, when the pool can tell, the prompts sent again after a failure.

``progress=`` accepts ``False`` (no bar, the default in library calls), ``True`` (a bar) or a
mapping of keyword arguments for ``tqdm`` (``{"desc": "leaves", "leave": False, "file": ...}``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from ._exceptions import ConfigurationError
from ._response import Response

__all__ = ["ProgressBar", "ProgressSetting", "check_progress", "open_bar"]

ProgressSetting: TypeAlias = "bool | Mapping[str, Any]"
"""What ``progress=`` accepts: ``False``, ``True``, or keyword arguments for ``tqdm``."""

ResultHook = Callable[[int, Response], None]

_POSTFIX_EVERY = 0.5  # seconds between updates of the failed / retries figures


def check_progress(setting: object) -> None:
    """Raise :class:`~aurora_swarm.ConfigurationError` for what ``progress=`` cannot be."""
    if isinstance(setting, bool) or setting is None or isinstance(setting, Mapping):
        return
    raise ConfigurationError(
        f"progress must be True, False or a mapping of tqdm options, got {setting!r}")


class ProgressBar:
    """One ``tqdm.auto`` bar over a known number of prompts (internal).

    Call it as ``bar(index, response)`` for each settled prompt (it is an ``on_result`` hook);
    :meth:`close` ends it, drawing the final state.
    """

    def __init__(
        self, total: int, desc: str, options: Mapping[str, Any] | None = None,
        retries: Callable[[], int] | None = None, hook: ResultHook | None = None,
        initial: int = 0,
    ) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]  # no stubs shipped

        settings: dict[str, Any] = {"total": total, "desc": desc, "unit": "prompt",
                                    "dynamic_ncols": True, "initial": initial, "smoothing": 0.1}
        settings.update(options or {})
        self._bar = tqdm(**settings)
        self._retries = retries
        self._retries_at_start = retries() if retries is not None else 0
        self._hook = hook
        self._next_postfix = 0.0
        self._retried: int | None = None
        self.failed = 0

    def __call__(self, index: int, response: Response) -> None:
        if not response.success:
            self.failed += 1
        self._bar.update(1)
        now = time.monotonic()
        if now >= self._next_postfix:
            self._next_postfix = now + _POSTFIX_EVERY
            self._bar.set_postfix(self._postfix(), refresh=False)
        if self._hook is not None:
            self._hook(index, response)

    def advance(self, done: int, failed: int, retries: int | None = None) -> None:
        """Move the bar to ``done`` settled prompts, ``failed`` of them failed, ``retries``
        prompts sent again (when known)."""
        self.failed = failed
        if retries is not None:
            self._retried = retries
        self._bar.set_postfix(self._postfix(), refresh=False)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)
        else:
            self._bar.refresh()

    def _postfix(self) -> dict[str, int]:
        figures = {"failed": self.failed}
        if self._retried is not None:
            figures["retries"] = self._retried
        elif self._retries is not None:
            figures["retries"] = self._retries() - self._retries_at_start
        return figures

    @property
    def n(self) -> int:
        """Prompts counted so far."""
        return int(self._bar.n)

    def close(self) -> None:
        """Draw the final state and end the bar. Safe to call twice."""
        if self._bar.disable:
            return
        self._bar.set_postfix(self._postfix(), refresh=False)
        self._bar.close()


def open_bar(
    setting: ProgressSetting | None, total: int, desc: str, *,
    retries: Callable[[], int] | None = None, hook: ResultHook | None = None,
    initial: int = 0,
) -> ProgressBar | None:
    """A bar when ``setting`` asks for one (``None`` otherwise)."""
    check_progress(setting)
    if setting is None or setting is False:
        return None
    options = setting if isinstance(setting, Mapping) else None
    return ProgressBar(total, desc, options, retries, hook, initial)
