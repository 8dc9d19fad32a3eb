"""Connections that close when a TLS handshake is cancelled.

The HTTP stack (httpcore2) closes a connection whose TLS handshake *fails*, but not one whose
handshake is *cancelled*: it catches ``Exception``, and a cancellation is not one. A request
cancelled while it shakes hands with an HTTPS endpoint — a backup that lost its race, a deadline,
the pool closing, a notebook cell interrupted — left its socket open until the garbage collector
found it (with a ``ResourceWarning``), and left the server waiting for the rest of a handshake
(asyncio servers wait 60 seconds). :func:`close_on_cancelled_handshakes` wraps the network
backend of an HTTP client's connection pools so that any way out of a handshake but success
closes the connection.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore2
import httpx2


class _ClosingStream(httpcore2.AsyncNetworkStream):
    """A network stream whose ``start_tls`` closes it on every way out but success."""

    def __init__(self, stream: httpcore2.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            secured = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        except BaseException:
            # Closing must finish though we are cancelled, and the handshake's own error (or the
            # cancellation) is the one to report, not one from closing.
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._stream.aclose()
            raise
        return _ClosingStream(secured)  # a proxy's tunnel shakes hands again inside it

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _ClosingBackend(httpcore2.AsyncNetworkBackend):
    """A network backend whose TCP streams close when their handshake is cancelled."""

    def __init__(self, backend: httpcore2.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )
        return _ClosingStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _ClosingStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def close_on_cancelled_handshakes(client: httpx2.AsyncClient) -> None:
    """Make the connection pools behind ``client`` close connections whose handshake is cancelled.

    Covers the client's own transport and its proxy mounts, when they are the HTTP stack's own
    ``AsyncHTTPTransport`` (a transport passed in by the caller is left as it is).
    """
    for transport in [client._transport, *client._mounts.values()]:
        if not isinstance(transport, httpx2.AsyncHTTPTransport):
            continue
        pool = transport._pool
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore2.AsyncNetworkBackend) and not isinstance(
            backend, _ClosingBackend
        ):
            pool._network_backend = _ClosingBackend(backend)
