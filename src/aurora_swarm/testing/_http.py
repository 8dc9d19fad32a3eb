"""HTTP/1.1 over asyncio streams, parsed by h11: one keep-alive connection at a time."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any, Protocol

import h11

__all__ = ["Handler", "Peer", "PeerLike", "Reply", "ReplyKind", "serve_connection"]

_CHUNK = 256 * 1024
_JSON = b"application/json"


class ReplyKind(enum.Enum):
    """What the connection does with a reply."""

    ANSWER = "answer"  # send the response, keep the connection open if the client allows
    DROP = "drop"  # close the connection without a response
    HANG = "hang"  # send nothing; wait until the client closes the connection
    CLOSED = "closed"  # the endpoint went away: the connection is being torn down


class Reply:
    """One response: status, body and extra headers, or a way of not answering."""

    __slots__ = ("body", "content_type", "headers", "kind", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        content_type: bytes = _JSON,
        kind: ReplyKind = ReplyKind.ANSWER,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type
        self.kind = kind

    @classmethod
    def json(
        cls, obj: Any, status: int = 200, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> Reply:
        """Return a reply whose body is ``obj`` as compact JSON."""
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return cls(status, body, headers=headers)


class PeerLike(Protocol):
    """The client of a request as a handler sees it: a connection, or an in-process caller."""

    authorization: bytes | None  # the request's Authorization header

    async def sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; ``False`` at once if the client goes away meanwhile."""
        ...


class Peer:
    """The client end of a connection, as a handler sees it while it works on a request."""

    __slots__ = ("_reader", "authorization", "early")

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.early: list[bytes] = []  # bytes of the next request, sent before this answer
        self.authorization: bytes | None = None  # the request's Authorization header

    async def sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; return ``False`` at once if the client closes the connection.

        vLLM aborts a request whose client went away; a handler that models time uses this to do
        the same. One read task per call, so it costs nothing when no time is modelled.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        while (remaining := end - loop.time()) > 0:
            if self._reader.at_eof():
                return False
            read = loop.create_task(self._reader.read(_CHUNK))
            try:
                await asyncio.wait((read,), timeout=remaining)
            finally:
                if not read.done():
                    read.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await read  # the reader takes one waiter at a time
            if read.cancelled():
                continue
            if read.exception() is not None or not read.result():
                return False
            self.early.append(read.result())
        return True


Handler = Callable[[str, str, bytes, Peer], Awaitable[Reply]]
"""``handler(method, path, body, peer) -> Reply``; ``path`` has no query string."""

DROP = Reply(kind=ReplyKind.DROP)
HANG = Reply(kind=ReplyKind.HANG)
CLOSED = Reply(kind=ReplyKind.CLOSED)


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    """Serve requests on one connection until it closes; never raises a network error."""
    conn = h11.Connection(h11.SERVER)
    peer = Peer(reader)
    try:
        while True:
            request = await _receive(conn, reader)
            if request is None:
                return
            method, path, body, peer.authorization = request
            reply = await handler(method, path, body, peer)
            if reply.kind is not ReplyKind.ANSWER:
                if reply.kind is ReplyKind.HANG:
                    await _until_eof(reader)
                return
            writer.write(_encode(conn, reply))
            await writer.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            if peer.early:
                conn.receive_data(b"".join(peer.early))
                peer.early.clear()
    except h11.RemoteProtocolError as exc:
        _answer_protocol_error(conn, writer, exc)
    except (ConnectionError, h11.LocalProtocolError):
        pass
    finally:
        writer.close()


async def _receive(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[str, str, bytes, bytes | None] | None:
    method = path = ""
    authorization: bytes | None = None
    chunks: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(_CHUNK))
        elif isinstance(event, h11.Request):
            method = event.method.decode("ascii")
            path = event.target.decode("ascii", "replace").split("?", 1)[0]
            authorization = next(
                (value for name, value in event.headers if name == b"authorization"), None)
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return method, path, b"".join(chunks), authorization
        else:  # ConnectionClosed (or PAUSED, which a server that answers in turn never sees)
            return None


def _encode(conn: h11.Connection, reply: Reply) -> bytes:
    headers = [
        (b"content-type", reply.content_type),
        (b"content-length", str(len(reply.body)).encode("ascii")),
        *reply.headers,
    ]
    head = h11.Response(status_code=reply.status, headers=headers, reason=_reason(reply.status))
    parts = [conn.send(head) or b""]
    if reply.body:
        parts.append(conn.send(h11.Data(data=reply.body)) or b"")
    parts.append(conn.send(h11.EndOfMessage()) or b"")
    return b"".join(parts)


@functools.cache
def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


async def _until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(_CHUNK):
        pass


def _answer_protocol_error(
    conn: h11.Connection, writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    status = exc.error_status_hint
    reply = Reply.json({"detail": f"bad HTTP request: {exc}"}, status=status)
    with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
        writer.write(_encode(conn, reply))
