"""The fake fleet without sockets: :class:`MockTransport`, an in-process HTTP transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import httpx2

from ._clock import Clock
from ._http import ReplyKind
from ._server import FakeServer

__all__ = ["MockTransport"]

_INFERENCE = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/chat/completions/batch"})


class _LocalPeer:
    """An in-process client: it leaves when its request times out (or is cancelled)."""

    __slots__ = ("authorization", "clock", "deadline", "timed_out")

    def __init__(self, clock: Clock, timeout: float | None, authorization: bytes | None) -> None:
        self.authorization = authorization
        self.clock = clock
        self.deadline = None if timeout is None else clock.now() + timeout
        self.timed_out = False

    async def sleep(self, delay: float) -> bool:
        if self.deadline is not None and self.clock.now() + delay > self.deadline:
            await self.clock.sleep(max(0.0, self.deadline - self.clock.now()))
            self.timed_out = True
            return False
        await self.clock.sleep(delay)
        return True

    async def hang(self) -> None:
        """Wait for an answer that never comes: until the timeout, or forever without one."""
        deadline = self.deadline
        if deadline is None:
            await anyio.sleep_forever()
            return
        await self.clock.sleep(max(0.0, deadline - self.clock.now()))
        self.timed_out = True


class MockTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that hands each request to a fake endpoint in-process, no socket.

    Give it to :class:`~aurora_swarm.VLLMPool` as ``transport=`` (or to any ``httpx2`` client):
    requests to a fleet's endpoints are answered by the same code as
    :class:`~aurora_swarm.testing.FakeFleet` on loopback ports (the same answers, faults,
    latency model and counters), on the fleet's clock. What the network would do, it imitates
    with the exceptions ``httpx2`` raises: a request to an endpoint that is not running fails
    to connect; ``"drop"`` and ``"die"`` close the connection without an answer; ``"hang"``
    and an answer slower than the request's read timeout time out, at that timeout on the
    fleet's clock (at once in real time on a :class:`~aurora_swarm.testing.FakeClock`). A
    cancelled request stops its work on the endpoint, as vLLM aborts a request whose client
    went away.

    Make it with ``FakeFleet(..., in_process=True)`` and use :attr:`FakeFleet.transport
    <aurora_swarm.testing.FakeFleet.transport>`.

    .. versionadded:: 0.1.0

    Examples
    --------
    A test of a pool on two in-process endpoints, on asyncio and trio alike; the second
    endpoint answers its first request with a 503 and takes ten modelled seconds per request,
    which a :class:`~aurora_swarm.testing.FakeClock` passes at once:

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.testing import EndpointBehavior, FakeClock, FakeFleet, LatencyModel
    >>> async def test_my_client():
    ...     clock = FakeClock()
    ...     async with FakeFleet(2, in_process=True, clock=clock,
    ...                          latency=LatencyModel(request_overhead=10.0),
    ...                          behaviors={1: EndpointBehavior(script=("503",))}) as fleet:
    ...         async with VLLMPool(fleet.endpoints, model=fleet.model,
    ...                             transport=fleet.transport) as pool:
    ...             answers = await pool.send_all_batched(["a", "b", "c"])
    ...     return [a.text for a in answers], fleet.counters(1).faults, clock.now() >= 10
    >>> for backend in ("asyncio", "trio"):
    ...     print(anyio.run(test_my_client, backend=backend))
    (['ECHO: a', 'ECHO: b', 'ECHO: c'], {'503': 1}, True)
    (['ECHO: a', 'ECHO: b', 'ECHO: c'], {'503': 1}, True)
    """

    def __init__(self, servers: Mapping[tuple[str, int], FakeServer], clock: Clock) -> None:
        self._servers = dict(servers)
        self._clock = clock

    def __repr__(self) -> str:
        return f"<MockTransport {len(self._servers)} endpoints>"

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one request from the endpoint its URL names."""
        url = request.url
        server = self._servers.get((url.host, url.port or 80))
        if server is None or not server.alive:
            raise httpx2.ConnectError(f"connection refused: {url.host}:{url.port}",
                                      request=request)
        body = await request.aread()
        auth = request.headers.get("authorization")
        peer = _LocalPeer(self._clock, _read_timeout(request.extensions),
                          None if auth is None else auth.encode("latin-1"))
        scope = anyio.CancelScope()
        server.local_requests.add(scope)
        path = url.path
        try:
            with scope:
                try:
                    reply = await server.handle(request.method, path, body, peer)
                except anyio.get_cancelled_exc_class():
                    if path in _INFERENCE and not scope.cancel_called:  # the client left
                        server.counters.abandoned += 1
                    raise
                if reply.kind is ReplyKind.HANG:
                    await peer.hang()
        finally:
            server.local_requests.discard(scope)
        if scope.cancelled_caught or reply.kind in (ReplyKind.DROP, ReplyKind.CLOSED):
            if peer.timed_out:
                raise httpx2.ReadTimeout("timed out", request=request)
            raise httpx2.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request)
        if peer.timed_out or reply.kind is ReplyKind.HANG:
            raise httpx2.ReadTimeout("timed out", request=request)
        headers = [(b"content-type", reply.content_type), *reply.headers]
        return httpx2.Response(reply.status, headers=headers, content=reply.body,
                               request=request)

    async def aclose(self) -> None:
        """Nothing to close: the endpoints belong to their fleet."""


def _read_timeout(extensions: Mapping[str, Any]) -> float | None:
    timeout = extensions.get("timeout")
    if not isinstance(timeout, Mapping):
        return None
    read = timeout.get("read")
    return float(read) if isinstance(read, int | float) else None
