"""OpenAI batch files: the input format of OpenAI's Batch API and ``vllm run-batch``, batched here.

An input line is ``{"custom_id": ..., "method": "POST", "url": "/v1/completions" or
"/v1/chat/completions", "body": {...}}``. Lines whose bodies differ only in the prompt (or the
messages) are *compatible*: they go out together in one batched call of the pool, so a file of
many lines costs a few requests per endpoint, not one per line. Completions bodies are sent as
raw prompts; chat bodies through the pool's chat template (``"auto"`` when it has none), and
one chat request per line when no way to batch conversations is found.

Each settled line is written as an OpenAI batch output line:

.. code-block:: text

    {"id": "batch_req_...", "custom_id": ..., "response": {"status_code": 200,
     "request_id": "req_...", "body": <completion or chat.completion>}, "error": null}

or, for a line that failed, ``"response": null, "error": {"code": ..., "message": ...}``.
The output file is the checkpoint: a rerun sends only the custom_ids it does not hold answered
(lines that failed are removed first and sent again).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import attrs

from ._exceptions import ConfigurationError, JobFileError
from ._formats import ChatTemplateSetting
from ._job_output import failure_cause
from ._jobs import JobProgress, JobSummary, _Ticker, log_start
from ._pool import VLLMPool
from ._prompts import Prompt, is_message
from ._response import Response

__all__ = ["BatchLine", "looks_like_openai_batch", "read_batch_file", "run_batch_file"]

_log = logging.getLogger("aurora_swarm.jobs")

_URLS = {"/v1/completions": False, "/v1/chat/completions": True}
_NOT_SAMPLING = frozenset({"model", "prompt", "messages", "max_tokens", "max_completion_tokens",
                           "n", "stream"})


@attrs.frozen
class BatchLine:
    """One request line of an OpenAI batch file (internal)."""

    custom_id: str
    chat: bool
    prompt: Prompt
    max_tokens: int | None
    sampling: str  # the other body fields, as canonical JSON: equal means compatible
    line: int

    @property
    def key(self) -> tuple[bool, int | None, str]:
        """Lines with equal keys share requests."""
        return self.chat, self.max_tokens, self.sampling


def looks_like_openai_batch(path: str | os.PathLike[str]) -> bool:
    """Whether the first non-blank line of ``path`` is an OpenAI batch request."""
    try:
        with open(path, encoding="utf-8") as handle:
            for raw in handle:
                if raw.strip():
                    record = json.loads(raw)
                    return isinstance(record, dict) and "custom_id" in record and "body" in record
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def read_batch_file(path: str | os.PathLike[str], model: str) -> list[BatchLine]:
    """Every request line of an OpenAI batch file, checked; errors name the line."""
    where = os.fspath(path)
    lines: list[BatchLine] = []
    seen: dict[str, int] = {}
    try:
        handle = open(where, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise JobFileError(where, None, f"cannot be read: {exc.strerror or exc}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as exc:
                raise JobFileError(where, number, f"is not JSON: {exc}") from exc
            line = attrs.evolve(_parse(record, model, _error_at(where, number)), line=number)
            if line.custom_id in seen:
                raise JobFileError(where, number, f"custom_id {line.custom_id!r} is used "
                                                  f"already on line {seen[line.custom_id]}")
            seen[line.custom_id] = number
            lines.append(line)
    if not lines:
        raise JobFileError(where, None, "holds no requests (only blank lines)")
    return lines


def _error_at(where: str, number: int) -> Callable[[str], JobFileError]:
    return lambda problem: JobFileError(where, number, problem)


def _parse(record: object, model: str, error: Callable[[str], JobFileError]) -> BatchLine:
    if not isinstance(record, dict):
        raise error("expected a JSON object with custom_id, method, url and body")
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise error("'custom_id' must be a non-empty string")
    if record.get("method", "POST") != "POST":
        raise error(f"'method' must be POST, got {record.get('method')!r}")
    url = record.get("url")
    if url not in _URLS:
        raise error(f"'url' must be one of {sorted(_URLS)}, got {url!r}")
    body = record.get("body")
    if not isinstance(body, dict):
        raise error("'body' must be a JSON object")
    chat = _URLS[url]
    if body.get("model", model) != model:
        raise error(f"body model {body['model']!r} is not the fleet's model {model!r} (--model)")
    if body.get("stream"):
        raise error("'stream': true is not supported in a batch")
    if body.get("n", 1) != 1:
        raise error("'n' must be 1 (one answer per request line)")
    if chat:
        messages = body.get("messages")
        if not (isinstance(messages, list) and messages and all(map(is_message, messages))):
            raise error("a chat body needs 'messages': a non-empty list of "
                        "{'role': string, 'content': string} objects")
        prompt: Prompt = [dict(m) for m in messages]
    else:
        prompt = body.get("prompt")  # type: ignore[assignment]
        if not isinstance(prompt, str):
            raise error("a completions body needs 'prompt': a string (one prompt a line)")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 1):
        raise error(f"'max_tokens' must be a positive integer, got {max_tokens!r}")
    sampling = {k: v for k, v in body.items() if k not in _NOT_SAMPLING}
    # Interned: a file holds a few kinds of bodies, not one per line.
    return BatchLine(custom_id, chat, prompt, max_tokens,
                     sys.intern(json.dumps(sampling, sort_keys=True, separators=(",", ":"))), 0)


def _done_ids(path: str) -> set[str]:
    """custom_ids the output file holds answered; failed and torn lines are removed first."""
    if not os.path.exists(path):
        return set()
    kept: list[bytes] = []
    done: set[str] = set()
    changed = False
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                changed = True  # a torn last line, left by a killed run
                break
            try:
                record = json.loads(raw)
                custom_id = record["custom_id"]
                answered = record.get("error") is None and record.get("response") is not None
            except (ValueError, KeyError, TypeError) as exc:
                raise JobFileError(path, number, "is not an OpenAI batch output line") from exc
            if answered:
                kept.append(raw)
                done.add(custom_id)
            else:
                changed = True
    if changed:
        temporary = f"{path}.tmp"
        with open(temporary, "wb") as handle:
            handle.writelines(kept)
        os.replace(temporary, path)
    return done


def output_line(line: BatchLine, response: Response, model: str) -> bytes:
    """The OpenAI batch output line for ``line``'s settled ``response``."""
    record: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": line.custom_id}
    if not response.success:
        record["response"] = None
        record["error"] = {"code": failure_cause(response.exception) or "error",
                           "message": response.error or "failed"}
        return (json.dumps(record) + "\n").encode()
    usage = None
    if response.usage is not None:
        u = response.usage
        usage = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                 "total_tokens": u.prompt_tokens + u.completion_tokens}
    choice: dict[str, Any] = {"index": 0, "finish_reason": response.finish_reason or "stop",
                              "logprobs": None}
    if line.chat:
        choice["message"] = {"role": "assistant", "content": response.text}
        body_id, kind = f"chatcmpl-{uuid.uuid4().hex}", "chat.completion"
    else:
        choice["text"] = response.text
        body_id, kind = f"cmpl-{uuid.uuid4().hex}", "text_completion"
    body = {"id": body_id, "object": kind, "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage}
    record["response"] = {"status_code": 200, "request_id": f"req_{uuid.uuid4().hex}",
                          "body": body}
    record["error"] = None
    return (json.dumps(record) + "\n").encode()


class _BatchRunner:
    """One run over an OpenAI batch file (internal; duck-types what ``_Ticker`` reads)."""

    def __init__(self, pool: VLLMPool, output: str, chat_template: ChatTemplateSetting,
                 window: int) -> None:
        self.pool = pool
        self.output = output
        self.chat_template = chat_template
        self.window = window
        self.done = 0
        self.failed = 0
        self.failures: Counter[str] = Counter()
        self._buffer: list[bytes] = []
        self._chat_fallback = False

    def settle(self, line: BatchLine, response: Response) -> None:
        self._buffer.append(output_line(line, response, self.pool.model))
        self.done += 1
        if not response.success:
            self.failed += 1
            self.failures[failure_cause(response.exception) or "unknown"] += 1

    async def send(self, lines: list[BatchLine]) -> None:
        first = lines[0]
        sampling = json.loads(first.sampling) or None
        prompts = [line.prompt for line in lines]

        def hook(k: int, response: Response) -> None:
            self.settle(lines[k], response)

        if not first.chat:
            await self.pool.send_all_batched(prompts, first.max_tokens, chat_template=None,
                                             sampling=sampling, on_result=hook)
            return
        if not self._chat_fallback:
            try:
                await self.pool.send_all_batched(
                    prompts, first.max_tokens, chat_template=self.chat_template,
                    sampling=sampling, on_result=hook)
                return
            except ConfigurationError as exc:
                if self.chat_template != "auto":
                    raise
                self._chat_fallback = True
                _log.info("chat lines: no way to batch conversations (%s); falling back to one "
                          "chat request per line", exc)
        await self.pool.send_all(prompts, max_tokens=first.max_tokens, sampling=sampling,
                                 on_result=hook)

    async def write(self, closing: anyio.Event) -> None:
        """Append settled lines every quarter second, and all that is left at the end."""
        handle = await anyio.to_thread.run_sync(open, self.output, "ab")
        try:
            while not closing.is_set():
                with anyio.move_on_after(0.25):
                    await closing.wait()
                await self._flush(handle)
        finally:
            with anyio.CancelScope(shield=True):
                await self._flush(handle)
                await anyio.to_thread.run_sync(handle.close)

    async def _flush(self, handle: Any) -> None:
        lines, self._buffer = self._buffer, []
        if lines:
            def write() -> None:
                handle.writelines(lines)
                handle.flush()

            await anyio.to_thread.run_sync(write)


async def run_batch_file(
    pool: VLLMPool,
    path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    chat_template: ChatTemplateSetting = None,
    window: int = 20_000,
    progress: Callable[[JobProgress], object] | None = None,
    progress_interval: float = 1.0,
) -> JobSummary:
    """Send every line of the OpenAI batch file ``path`` the output file does not hold yet.

    Compatible lines (equal bodies but for the prompt or messages) share batched calls, at
    most ``window`` lines a call; each settled line is appended to ``output`` in the OpenAI
    batch output format. ``chat_template`` formats chat lines (``None``: the pool's, or
    ``"auto"`` when the pool has none).
    """
    source, target = os.fspath(path), os.fspath(output)
    lines = await anyio.to_thread.run_sync(read_batch_file, source, pool.model)
    done = await anyio.to_thread.run_sync(_done_ids, target)
    todo = [line for line in lines if line.custom_id not in done]
    skipped = len(lines) - len(todo)
    groups: dict[tuple[bool, int | None, str], list[BatchLine]] = {}
    for line in todo:
        groups.setdefault(line.key, []).append(line)
    setting = chat_template if chat_template is not None else (pool.chat_template or "auto")
    runner = _BatchRunner(pool, target, setting, window)
    log_start(target, len(lines), skipped, pool.size)
    _log.debug("%s: %d groups of compatible bodies", source, len(groups))
    before = pool.stats()
    start = time.monotonic()
    ticker = _Ticker(runner, len(lines), skipped, before, start, progress)  # type: ignore[arg-type]
    closing = anyio.Event()
    slots = anyio.Semaphore(4)

    async def one(chunk: list[BatchLine]) -> None:
        async with slots:
            await runner.send(chunk)

    async with anyio.create_task_group() as group:
        group.start_soon(runner.write, closing)
        if progress is not None:
            group.start_soon(ticker.run, progress_interval)
        async with anyio.create_task_group() as sends:
            for members in groups.values():
                for k in range(0, len(members), window):
                    sends.start_soon(one, members[k:k + window])
        closing.set()
        ticker.stop()
    ticker.tick()
    summary = JobSummary(target, len(lines), skipped, runner.done - runner.failed, runner.failed,
                         dict(runner.failures), pool.stats() - before, time.monotonic() - start)
    _log.info("done %s: %d answered, %d failed in %.1f s; %d requests for %d lines",
              target, summary.answered, summary.failed, summary.elapsed, summary.stats.requests,
              summary.sent, extra={"event": "done"})
    return summary

