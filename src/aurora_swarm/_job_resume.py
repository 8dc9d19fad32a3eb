"""What a rerun may skip: fingerprints of what determines an answer, and the resume plan.

Each result line carries a fingerprint (``"fp"``): a hash of everything that determines the
answer, that is the prompt or conversation (after ``--template`` filled it), the system prompt,
the model, the ``max_tokens`` cap, the sampling fields and the chat template. On resume, an id
whose last line has the fingerprint its item has now is done; one whose fingerprint differs has
*changed* (the prompts file was edited, or a setting); one the prompts file no longer holds is
*gone*. Lines written before fingerprints existed carry none: they count as done, unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import attrs

from ._chat_template import ChatTemplate
from ._config import PoolDefault
from ._exceptions import JobFileError
from ._formats import ChatTemplateSetting, FormatResolver
from ._job_input import ItemId, JobItem
from ._pool import VLLMPool

__all__ = [
    "ON_CHANGE",
    "ChangedItemsError",
    "Fingerprinter",
    "OnChange",
    "ResumePlan",
    "plan_resume",
]

OnChange: TypeAlias = Literal["stop", "rerun", "keep"]
"""What a rerun does with items whose prompt or settings changed since their result was written:
``"stop"`` before sending anything, send them again (``"rerun"``), or keep the old results."""

ON_CHANGE = ("stop", "rerun", "keep")
_EXAMPLES = 5


class ChangedItemsError(JobFileError):
    """The results file answers prompts or settings that have changed since; nothing was sent.

    Raised by :func:`~aurora_swarm.jobs.run_job` with ``on_change="stop"`` (the default) when
    the fingerprint of some results differs from what their items would be sent with now.

    .. versionadded:: 0.1.0

    Attributes
    ----------
    changed:
        How many items changed.
    examples:
        The ids of the first few of them, in input order.
    gone:
        Ids in the results file that the input no longer holds.
    """

    def __init__(self, path: str, changed: int, examples: list[ItemId], gone: int) -> None:
        self.changed = changed
        self.examples = examples
        self.gone = gone
        shown = ", ".join(map(repr, examples)) + (", ..." if changed > len(examples) else "")
        gone_note = (f"; {gone} ids in it are no longer in the prompts" if gone else "")
        super().__init__(
            path, None,
            f"holds results for {changed} items whose prompt or settings (model, max tokens, "
            f"sampling, template, system prompt) have changed since (ids {shown}){gone_note}. "
            "Nothing was sent. To send them again (the new answer is appended and wins when "
            "read): --on-change rerun (on_change='rerun'); to keep the old answers: "
            "--on-change keep; or write to a new results file")


class Fingerprinter:
    """The fingerprint of an item as a run would send it (a short hex string).

    Parameters
    ----------
    pool:
        The pool that sends: its model and sampling fields count.
    max_tokens, chat_template, system_prompt:
        The run's settings, as given to :func:`~aurora_swarm.jobs.run_job` (an item's own
        ``max_tokens`` and ``system_prompt`` win).
    """

    def __init__(self, pool: VLLMPool, max_tokens: int | None,
                 chat_template: ChatTemplateSetting | PoolDefault,
                 system_prompt: str | PoolDefault | None) -> None:
        template = pool.chat_template if isinstance(chat_template, PoolDefault) else chat_template
        self._max_tokens = max_tokens if max_tokens is not None else pool.max_tokens
        self._system = (pool.system_prompt if isinstance(system_prompt, PoolDefault)
                        else system_prompt)
        settings = {"params": pool._params(None), "template": _template_key(template)}
        self._base = hashlib.blake2b(_canonical(settings).encode("utf-8"), digest_size=8)

    def __call__(self, item: JobItem) -> str:
        """The fingerprint of ``item``."""
        max_tokens = item.max_tokens if item.max_tokens is not None else self._max_tokens
        system = item.system_prompt if item.system_prompt is not None else self._system
        prompt = item.prompt if isinstance(item.prompt, str) else _canonical(item.prompt)
        digest = self._base.copy()
        # Each field framed by its length, so no two different items hash the same text.
        for field in (prompt, "" if system is None else "s" + system,
                      "" if max_tokens is None else str(max_tokens)):
            data = field.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        digest.update(b"c" if not isinstance(item.prompt, str) else b"t")
        return digest.hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=repr)


def _template_key(setting: ChatTemplateSetting) -> str:
    """What identifies a chat template setting: the template's own text where it is known."""
    if setting is None or setting in ("auto", "server"):
        return str(setting)
    template = setting if isinstance(setting, ChatTemplate) else FormatResolver.check(
        setting).template  # type: ignore[union-attr]
    if template is None:  # pragma: no cover - check() gives a template for the rest
        return os.fspath(setting) if not isinstance(setting, ChatTemplate) else repr(setting)
    text = _canonical([template.source, template.special_tokens])
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@attrs.frozen
class ResumePlan:
    """What a rerun does, from the results file and the items.

    Attributes
    ----------
    done:
        Ids not to send again.
    changed:
        Items whose results were written for another prompt or settings.
    gone:
        Ids in the results file the input no longer holds.
    unchecked:
        Done ids whose result line has no fingerprint (written by an older version).
    kept_failures:
        Done ids whose last line is a failure (``retry_failed=False``).
    """

    done: set[ItemId]
    changed: int
    gone: int
    unchecked: int
    kept_failures: int
    changed_examples: list[ItemId] = attrs.field(factory=list)
    gone_examples: list[ItemId] = attrs.field(factory=list)


def plan_resume(
    records: Mapping[ItemId, tuple[str | None, bool]], fingerprints: Mapping[ItemId, str],
    on_change: OnChange,
) -> ResumePlan:
    """Decide which ids are done: ``records`` maps an id to the fingerprint and success of its
    last line (only lines that count: successes, and failures kept), ``fingerprints`` the
    input's ids to their fingerprints now."""
    done: set[ItemId] = set()
    changed: list[ItemId] = []
    gone: list[ItemId] = []
    unchecked = kept = changed_count = gone_count = 0
    # Ids that are gone, in the file's order; the others in the input's, so the examples an
    # error shows are the first items of the input, whatever order they were answered in.
    for item_id in records:
        if item_id not in fingerprints:
            gone_count += 1
            _note(gone, item_id)
    for item_id, new in fingerprints.items():
        if item_id not in records:
            continue
        old, success = records[item_id]
        if old is not None and old != new:
            changed_count += 1
            _note(changed, item_id)
            if on_change != "keep":
                continue
        elif old is None:
            unchecked += 1
        done.add(item_id)
        kept += not success
    return ResumePlan(done, changed_count, gone_count, unchecked, kept, changed, gone)


def _note(examples: list[ItemId], item_id: ItemId) -> None:
    if len(examples) < _EXAMPLES:
        examples.append(item_id)

