"""What a batch job writes: one JSON line per settled item, appended, flushed, resumable.

The results file is the checkpoint. Each settled item is one line (see :class:`JobResult`),
written with one ``write`` per burst of results (a batched request settles many at once) and
``fsync``-ed at most every ``sync_interval`` seconds. A process killed at any moment leaves
whole lines plus, at worst, a torn last line without its newline; reopening the file cuts that
torn line off, so every id it holds is there exactly once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs

from ._exceptions import RequestError, SwarmError
from ._job_input import ItemId, JobFileError, JobItem
from ._response import Response, Usage

__all__ = ["JobResult", "ResultWriter", "ResultsFile", "read_results"]

_TAIL_BLOCK = 1 << 16


@attrs.frozen
class JobResult:
    """One line of a results file: what became of one item.

    .. versionadded:: 0.1.0

    Attributes
    ----------
    id:
        The item's id.
    index:
        The item's 0-based position in the input.
    success:
        Whether ``text`` is the model's answer.
    text:
        The answer (empty on failure).
    finish_reason:
        ``"stop"``, ``"length"``, ... as the server reported it.
    usage:
        Token counts, when the server reported them.
    endpoint:
        ``host:port`` of the endpoint that answered (or last tried).
    attempts:
        Requests that carried the item.
    latency:
        Seconds the answering request took.
    error:
        Why there is no answer (``None`` on success).
    cause:
        The kind of failure, as counted in :class:`~aurora_swarm.PoolStats` (``"HTTP 503"``,
        ``"RequestTimeout"``, ...), or ``None``.
    meta:
        The item's ``meta``, copied as it was.
    fingerprint:
        A hash of what determined the answer (prompt, model, max tokens, sampling, chat
        template, system prompt), written as ``"fp"``; a rerun compares it with the item's
        to tell whether the result still answers it. ``None`` in files written before
        fingerprints existed.

        .. versionadded:: 0.1.0
    """

    id: str | int
    index: int
    success: bool
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    endpoint: str | None = None
    attempts: int = 1
    latency: float = 0.0
    error: str | None = None
    cause: str | None = None
    meta: Any = None
    fingerprint: str | None = None

    @classmethod
    def from_response(cls, item: JobItem, response: Response,
                      fingerprint: str | None = None) -> JobResult:
        """The record of ``item`` answered (or failed) by ``response``."""
        return cls(
            item.id, item.index, response.success, response.text, response.finish_reason,
            response.usage, None if response.endpoint is None else str(response.endpoint),
            response.attempts, round(response.latency, 6), response.error,
            failure_cause(response.exception), item.meta, fingerprint,
        )

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object."""
        data: dict[str, Any] = {
            "id": self.id, "index": self.index, "success": self.success, "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": None if self.usage is None else {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens},
            "endpoint": self.endpoint, "attempts": self.attempts, "latency": self.latency,
            "error": self.error, "cause": self.cause,
        }
        if self.meta is not None:
            data["meta"] = self.meta
        if self.fingerprint is not None:
            data["fp"] = self.fingerprint
        return data

    def line(self) -> bytes:
        """The record as one JSONL line (UTF-8, ending in a newline)."""
        return (json.dumps(self.to_json(), ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobResult:
        """Read a record back (the inverse of :meth:`to_json`)."""
        usage = data.get("usage")
        return cls(
            data["id"], int(data.get("index", -1)), bool(data["success"]),
            data.get("text") or "", data.get("finish_reason"),
            None if not isinstance(usage, dict) else Usage(
                int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            data.get("endpoint"), int(data.get("attempts", 1)),
            float(data.get("latency", 0.0)), data.get("error"), data.get("cause"),
            data.get("meta"), data.get("fp"),
        )


def failure_cause(exc: SwarmError | None) -> str | None:
    """The short name a failure is counted under (``"HTTP 503"``, ``"PromptError"``, ...)."""
    if exc is None:
        return None
    return exc.cause if isinstance(exc, RequestError) else type(exc).__name__


def _records(path: str) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """Every whole line of a results file: ``(line number, raw line, record)``."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                return  # a torn last line (the caller cuts it off before reading)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not isinstance(record, dict) or "id" not in record or "success" not in record:
                raise JobFileError(path, number, "is not a result record; is this the results "
                                                 "file of a job (or was it edited)?")
            yield number, raw, record


def read_results(path: str | os.PathLike[str], *, ordered: bool = True) -> list[JobResult]:
    """The records of a results file, one per id, by input index (or in file order).

    An id written more than once (a rerun with ``on_change="rerun"`` appends the new answer)
    is read from its last line. A torn last line (left by a killed run) is skipped.

    .. versionadded:: 0.1.0

    Parameters
    ----------
    path:
        The results file.
    ordered:
        Sort by the items' input index (default) instead of the order they settled in.

    Raises
    ------
    JobFileError
        If the file is missing or holds a line that is not a result record.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise JobFileError(name, None, "no such file")
    latest: dict[ItemId, JobResult] = {}
    for _, _, record in _records(name):
        latest.pop(record["id"], None)  # re-inserted: file order is the order of last lines
        latest[record["id"]] = JobResult.from_json(record)
    results = list(latest.values())
    if ordered:
        results.sort(key=lambda r: r.index)
    return results


@attrs.define(eq=False)
class ResultsFile:
    """A job's results file, open for appending, locked against a second run, repaired.

    Use :meth:`open`; ``records`` then maps each id whose last line counts (an answer, or a
    failure kept with ``retry_failed=False``) to that line's fingerprint and success.
    """

    path: str
    fd: int
    records: dict[ItemId, tuple[str | None, bool]]
    dropped_failures: int = 0
    torn_bytes: int = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, retry_failed: bool) -> ResultsFile:
        """Open (or create) ``path``: lock it, cut a torn last line, read each id's last line.

        With ``retry_failed``, ids whose last line is a failure are removed (the file is
        rewritten atomically, keeping the last line of every other id) so that their items run
        again and each id stays in the file once.
        """
        name = os.fspath(path)
        fd = _open_locked(name)
        try:
            torn = _cut_torn_tail(fd)
            last: dict[ItemId, tuple[int, str | None, bool]] = {}
            for number, _, record in _records(name):
                last[record["id"]] = (number, _fingerprint(record), bool(record["success"]))
            failed = sum(1 for _, _, ok in last.values() if not ok)
            results = cls(name, fd, {
                key: (fp, ok) for key, (_, fp, ok) in last.items() if ok or not retry_failed},
                torn_bytes=torn)
            if retry_failed and failed:
                keep = {number for number, _, ok in last.values() if ok}
                del last
                results.fd = _rewrite_keeping(name, fd, keep)
                results.dropped_failures = failed
            return results
        except BaseException:
            os.close(fd)
            raise

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end of the file (all of it; ``write`` may take it in parts)."""
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def sync(self) -> None:
        """Flush the file to stable storage (``fsync``)."""
        os.fsync(self.fd)

    def close(self) -> None:
        """Close the file (and release its lock). Safe to call twice."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open_locked(name: str) -> int:
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except IsADirectoryError:
        raise JobFileError(name, None, "is a directory, not a results file") from None
    except OSError as exc:
        raise JobFileError(name, None, f"cannot be opened for writing: {exc}") from exc
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JobFileError(name, None, "another run is writing this results file (it is "
                                       "locked); wait for it or write elsewhere") from None
    except OSError as exc:  # a file system without locks (some parallel file systems)
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            os.close(fd)
            raise
    return fd


def _cut_torn_tail(fd: int) -> int:
    """Truncate the file after its last newline; return how many bytes were cut."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    else:
        keep = 0
    if keep < size:
        os.ftruncate(fd, keep)
        os.fsync(fd)
    return size - keep


def _fingerprint(record: dict[str, Any]) -> str | None:
    value = record.get("fp")
    return value if isinstance(value, str) else None


def _rewrite_keeping(name: str, fd: int, keep: set[int]) -> int:
    """Replace the file, atomically, by the lines numbered in ``keep``; return the new locked
    fd."""
    target = Path(name)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as out:
        for number, raw, _ in _records(name):
            if number in keep:
                out.write(raw)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)
    _sync_directory(target.parent)
    new_fd = _open_locked(name)
    os.close(fd)
    return new_fd


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or file system allows it
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class ResultWriter:
    """Appends result lines in bursts from a task of its own, syncing now and then.

    :meth:`add` is synchronous (it runs inside a pool's ``on_result`` hook); the lines a
    burst of results adds are written together by :meth:`run` with one ``write`` (in a worker
    thread, so a slow file system does not stall the event loop). ``sync_interval`` bounds the
    seconds between a write and its ``fsync`` (``0``: every write; ``None``: never). A killed
    process loses nothing it wrote either way; ``fsync`` guards against a crash of the machine.
    """

    def __init__(self, results: ResultsFile, sync_interval: float | None) -> None:
        self._results = results
        self._sync_interval = sync_interval
        self._buffer: list[bytes] = []
        self._ready = anyio.Event()
        self._closing = False
        self._dirty = False
        self._failed = False
        self._synced_at = time.monotonic()
        self.lines_written = 0
        self.syncs = 0

    def add(self, line: bytes) -> None:
        """Queue one line; it is written at the next burst."""
        self._buffer.append(line)
        self._ready.set()

    async def run(self) -> None:
        """Write bursts until :meth:`close`; on the way out (also when cancelled) write all."""
        try:
            while not self._closing:
                wait = self._sync_interval if self._dirty else None
                with anyio.move_on_after(wait):
                    await self._ready.wait()
                self._ready = anyio.Event()
                await self._flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self._flush(final=True)

    def close(self) -> None:
        """Ask :meth:`run` to write what is left and return."""
        self._closing = True
        self._ready.set()

    async def _flush(self, *, final: bool = False) -> None:
        if self._failed:
            return  # after a failed write, appending more could leave a torn line mid-file
        lines, self._buffer = self._buffer, []
        interval = self._sync_interval
        now = time.monotonic()
        due = interval is not None and (self._dirty or lines) and (
            final or now - self._synced_at >= interval)
        if not lines and not due:
            return
        started = False

        def write() -> None:
            nonlocal started
            started = True
            try:
                self._write(b"".join(lines), bool(due))
            except BaseException:
                self._failed = True
                raise

        try:
            await anyio.to_thread.run_sync(write)
        except BaseException:
            if not started:  # cancelled before the thread ran: the lines are still to write
                self._buffer[:0] = lines
            raise
        self.lines_written += len(lines)

    def _write(self, data: bytes, sync: bool) -> None:
        if data:
            self._dirty = True
            self._results.append(data)
        if sync:
            self._results.sync()
            self._synced_at = time.monotonic()
            self._dirty = False
            self.syncs += 1
