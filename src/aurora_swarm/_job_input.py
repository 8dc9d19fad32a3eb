"""What a batch job reads: :class:`JobItem`, prompt files (text or JSONL) and their errors.

A text prompts file holds one prompt a line; blank lines are skipped and a prompt's id is its
line number. A JSONL prompts file holds one JSON object a line:

.. code-block:: json

    {"id": "q1", "prompt": "What is 2 + 2?"}
    {"id": "q2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 64}
    {"id": "q3", "item": "BRCA1", "meta": {"source": "panel A"}}

with the keys listed in :data:`JSONL_KEYS`. Files are read in two passes (one to check every
line and count, one to send), never held in memory whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from ._exceptions import JobFileError
from ._prompts import Prompt, is_message
from ._templates import fill_template

__all__ = [
    "JSONL_KEYS",
    "JobFileError",
    "JobItem",
    "PromptFile",
    "as_items",
]

ItemId: TypeAlias = "str | int"
"""An item's id: a string or an integer, unique within a job."""

JSONL_KEYS: dict[str, str] = {
    "id": "the item's id, a string or an integer (default: the line number)",
    "prompt": "the prompt text",
    "messages": "a conversation: a list of {'role': ..., 'content': ...} (needs a chat template)",
    "item": "the value filled into --template ({item}, or {key} for each key of an object)",
    "max_tokens": "tokens to generate for this item (default: the run's)",
    "system_prompt": "a system message for this item (default: the run's)",
    "meta": "any JSON value, copied to the item's result as it is",
}
"""The keys a JSONL prompts line may have, with what each means."""

_SOURCES = ("prompt", "messages", "item")
_SAMPLING_HINT = frozenset({"temperature", "top_p", "top_k", "seed", "stop", "n",
                            "presence_penalty", "frequency_penalty", "repetition_penalty"})


@attrs.frozen
class JobItem:
    """One unit of work of a job: an id, a prompt, and its own settings.

    .. versionadded:: 0.1.0

    Attributes
    ----------
    id:
        Unique within the job; how a rerun knows the item is done.
    prompt:
        A string, or a conversation (needs a chat template).
    index:
        The item's 0-based position in the input (blank lines do not count).
    max_tokens:
        Tokens to generate for this item; ``None`` uses the job's setting.
    system_prompt:
        A system message for this item; ``None`` uses the job's setting.
    meta:
        Any JSON value, copied to the result record.
    line:
        The line of the prompts file the item came from (``None`` for items from Python).
    """

    id: str | int
    prompt: Prompt
    index: int = 0
    max_tokens: int | None = None
    system_prompt: str | None = None
    meta: Any = None
    line: int | None = None

    @property
    def group(self) -> tuple[int | None, str | None]:
        """Items with equal groups can share one batched call."""
        return (self.max_tokens, self.system_prompt)


Format: TypeAlias = Literal["auto", "text", "jsonl"]


def _fspath(value: str | os.PathLike[str]) -> str:
    return os.fspath(value)

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


@attrs.frozen
class PromptFile:
    """A prompts file, read lazily: iterating yields :class:`JobItem` objects, line by line.

    .. versionadded:: 0.1.0

    Iterating again reads the file again, so a job can check every line first and send later
    without holding the file in memory.

    Parameters
    ----------
    path:
        The file.
    format:
        ``"text"`` (one prompt a line), ``"jsonl"`` (one JSON object a line) or ``"auto"``
        (JSONL when the name ends in ``.jsonl``, ``.ndjson`` or ``.json``, else text).
    template:
        A map-style template such as ``"Summarise: {item}"``: each text line, or each JSONL
        ``item``, is filled in (plain replacement; other braces are left alone).

    Raises
    ------
    JobFileError
        While iterating: the file is missing or unreadable, or a line is malformed (the message
        names the file and the line).
    """

    path: str = attrs.field(converter=_fspath)
    format: Format = "auto"
    template: str | None = None

    @property
    def kind(self) -> Literal["text", "jsonl"]:
        """The format actually read (``"auto"`` resolved from the file name)."""
        if self.format == "auto":
            return "jsonl" if self.path.lower().endswith(_JSONL_SUFFIXES) else "text"
        return self.format

    def __iter__(self) -> Iterator[JobItem]:
        parse = self._text_item if self.kind == "text" else self._jsonl_item
        index = 0
        for number, raw in self._lines():
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self._error(number, f"is not UTF-8 text ({exc.reason} at byte "
                                          f"{exc.start})") from None
            yield parse(text, number, index)
            index += 1

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below; a generator holds it
        except FileNotFoundError:
            raise JobFileError(self.path, None, "no such file") from None
        except IsADirectoryError:
            raise JobFileError(self.path, None, "is a directory, not a prompts file") from None
        except OSError as exc:
            raise JobFileError(self.path, None, f"cannot be read: {exc}") from exc
        with handle:
            for number, raw in enumerate(handle, start=1):
                yield number, raw.rstrip(b"\r\n")

    def _error(self, line: int | None, problem: str) -> JobFileError:
        return JobFileError(self.path, line, problem)

    def _text_item(self, text: str, number: int, index: int) -> JobItem:
        prompt = text if self.template is None else self._fill(self.template, text, number)
        return JobItem(number, prompt, index, line=number)

    def _jsonl_item(self, text: str, number: int, index: int) -> JobItem:
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise self._error(number, f"is not valid JSON ({exc})") from None
        return item_from_record(record, index, number, self.template, self._error, line=number)

    def _fill(self, template: str, value: object, number: int) -> str:
        return fill_item(template, value, lambda problem: self._error(number, problem))


def fill_item(template: str, value: object, error: Callable[[str], Exception]) -> str:
    """Fill a map-style template with one item: ``{item}``, or ``{key}`` for an object's keys."""
    if isinstance(value, Mapping):
        missing = [k for k in value if not isinstance(k, str)]
        if missing:
            raise error(f"item keys must be strings, got {missing[0]!r}")
        return fill_template(template, **value)
    if "{item}" not in template:
        raise error("the template has no {item} placeholder to fill with this item")
    return fill_template(template, item=value)


ErrorFactory: TypeAlias = Callable[[int | None, str], JobFileError]


def item_from_record(
    record: object, index: int, number: int, template: str | None, error: ErrorFactory,
    *, line: int | None,
) -> JobItem:
    """Check one JSON record (a JSONL line, or a mapping from Python) and make its item.

    ``number`` is the default id (and what ``error`` is called with); ``line`` the source line.
    """
    if not isinstance(record, Mapping):
        raise error(number, f"expected a JSON object, got {_json_type(record)}")
    unknown = [k for k in record if k not in JSONL_KEYS]
    if unknown:
        raise error(number, _unknown_key_message(unknown[0]))
    item_id = record.get("id", number)
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        raise error(number, f"'id' must be a string or an integer, got {_json_type(item_id)}")
    given = [k for k in _SOURCES if k in record]
    if len(given) != 1:
        raise error(number, "needs exactly one of 'prompt', 'messages' or 'item'"
                    + (f", got {given}" if given else ""))
    prompt = _prompt_of(record, given[0], template, lambda p: error(number, p))
    max_tokens = record.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 1):
        raise error(number, f"'max_tokens' must be a positive integer, got {max_tokens!r}")
    system = record.get("system_prompt")
    if system is not None and not isinstance(system, str):
        raise error(number, f"'system_prompt' must be a string, got {_json_type(system)}")
    return JobItem(item_id, prompt, index, max_tokens, system, record.get("meta"), line)


def _prompt_of(record: Mapping[str, Any], key: str, template: str | None,
               error: Callable[[str], JobFileError]) -> Prompt:
    value = record[key]
    if key == "prompt":
        if not isinstance(value, str):
            raise error(f"'prompt' must be a string, got {_json_type(value)}")
        return value
    if key == "messages":
        if not (isinstance(value, list) and value and all(map(is_message, value))):
            raise error("'messages' must be a non-empty list of "
                        "{'role': string, 'content': string} objects")
        return [dict(m) for m in value]
    if template is None:
        raise error("has an 'item' but no template was given (--template)")
    return fill_item(template, value, error)


def _unknown_key_message(key: str) -> str:
    allowed = ", ".join(JSONL_KEYS)
    if key in _SAMPLING_HINT:
        return (f"per-item {key!r} is not supported; set it for the whole run "
                f"(--sampling {key}=...). Keys a line may have: {allowed}")
    return f"unknown key {key!r} (keys a line may have: {allowed}; put other data under 'meta')"


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def as_items(items: Iterable[JobItem | Prompt | Mapping[str, Any]]) -> Iterable[JobItem]:
    """Items for a job from Python values, re-iterable.

    A :class:`JobItem` and a :class:`PromptFile` are used as they are; a string or a
    conversation at position ``i`` becomes an item with id ``i``; a mapping is read like a
    JSONL line (its id defaulting to its position).
    """
    if isinstance(items, PromptFile):
        return items
    if isinstance(items, str):
        raise JobFileError("items", None, "items must be a list of prompts, not one string")
    # A sequence (a list, a Dataset column) is read in place, not copied.
    values = items if isinstance(items, Sequence) else list(items)
    return _PythonItems(values)


@attrs.frozen
class _PythonItems:
    values: Sequence[Any]

    def __iter__(self) -> Iterator[JobItem]:
        def error(position: int | None, problem: str) -> JobFileError:
            return JobFileError(f"items[{position}]", None, problem)

        for position, value in enumerate(self.values):
            if isinstance(value, JobItem):
                yield value if value.index == position else attrs.evolve(value, index=position)
            elif isinstance(value, str) or (isinstance(value, list | tuple) and value
                                            and all(map(is_message, value))):
                yield JobItem(position, value, position)
            elif isinstance(value, Mapping):
                yield item_from_record(value, position, position, None, error, line=None)
            else:
                raise error(position, "expected a prompt (a string or a conversation), "
                                      f"a JobItem or a mapping, got {_json_type(value)}")
