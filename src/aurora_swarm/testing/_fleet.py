"""Many fake vLLM endpoints in one process: :class:`FakeFleet`."""

from __future__ import annotations

import asyncio
import enum
import errno
import os
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from .._endpoint import Endpoint
from ._behavior import EndpointBehavior
from ._clock import Clock, RealClock
from ._counters import EndpointCounters, FleetGauge, sum_counters
from ._latency import LatencyModel
from ._mock import MockTransport
from ._server import FakeServer, ServerConfig

__all__ = ["FakeFleet"]

_START_BATCH = 256  # endpoints bound concurrently while starting
# In-process endpoints are named under a top-level domain that never resolves (RFC 6761), so a
# client that forgets the mock transport fails to connect instead of reaching a real server.
_LOCAL_HOST = "fake-fleet.invalid"
_LOCAL_FIRST_PORT = 8000
_TAG_KEY = re.compile(r"^[A-Za-z_][\w.-]*$")


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class FakeFleet:
    """A fleet of fake vLLM OpenAI-compatible servers on loopback ports, in this event loop.

    Each endpoint answers ``GET /health``, ``GET /v1/models``, ``POST /v1/completions`` (a string
    or a list of strings as ``prompt``, one choice per prompt), ``POST /v1/chat/completions``,
    ``POST /tokenize``, ``GET /metrics`` (vLLM's ``vllm:num_requests_running`` and
    ``vllm:num_requests_waiting`` gauges, counting prompts as sequences, in Prometheus text) and,
    when ``chat_batch`` is on, ``POST /v1/chat/completions/batch``, with vLLM's response and error
    shapes. Answers are deterministic: see
    :func:`~aurora_swarm.testing.expected_answer`. How fast each endpoint answers follows
    ``latency`` and its behavior's ``slowness``; which faults it injects follows its
    :class:`~aurora_swarm.testing.EndpointBehavior`.

    Use it as an async context manager; it runs in the caller's event loop, so the test and the
    fleet share one loop and no thread. On ports it needs asyncio; in-process it runs on asyncio
    and trio.

    Parameters
    ----------
    n_endpoints : int
        How many endpoints to start.
    model : str
        The served model name; requests that name another model get vLLM's 404.
    max_model_len : int
        The context length: prompt tokens plus ``max_tokens`` beyond it get vLLM's 400.
    latency : LatencyModel
        The latency model of every endpoint (by default, answers at once).
    behaviors : Mapping, Sequence of EndpointBehavior, or None
        Per-endpoint behavior: a mapping from endpoint index (the others behave well), or one
        behavior per endpoint.
    chat_batch : bool
        Serve ``/v1/chat/completions/batch``; when off, that route answers 404 like a vLLM
        server without it.
    model_root : str or None
        The ``root`` listed by ``/v1/models`` (e.g. the model's directory); default ``model``.
    host : str
        The address to listen on.
    ports : Sequence of int or None
        One port per endpoint; by default the operating system picks free ports.
    metrics : bool
        Serve ``GET /metrics``; when off, it answers 404 like a server without metrics.

        .. versionadded:: 0.1.0
    api_key : str or None
        When set, ``/v1/...`` requests without ``Authorization: Bearer <api_key>`` get 401, as
        from ``vllm serve --api-key``.
    base_path : str
        Serve every route under this prefix, as a gateway does (``"/site/llm"``: the API's
        base URL is ``.../site/llm/v1``); :attr:`endpoints` carry it.
    tls : ssl.SSLContext or None
        Serve HTTPS with this server-side context (its certificate must name ``host``);
        :attr:`endpoints` are then ``https``.
    in_process : bool
        Open no socket: the endpoints answer through :attr:`transport`, a
        :class:`~aurora_swarm.testing.MockTransport` to give to the client
        (``VLLMPool(..., transport=fleet.transport)``). Such a fleet runs on asyncio and trio.
        Its endpoints are named ``fake-fleet.invalid:8000`` and on, which no network reaches.
    clock : RealClock, FakeClock or None
        The clock of the latency model and of timeouts, for an in-process fleet (the default
        is the event loop's, :class:`~aurora_swarm.testing.RealClock`). On a
        :class:`~aurora_swarm.testing.FakeClock` modelled time passes at once.

    Examples
    --------
    Four endpoints on free loopback ports; endpoint 1 answers its first request with a 503:

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.testing import EndpointBehavior, FakeFleet
    >>> async def demo():
    ...     async with FakeFleet(4, behaviors={1: EndpointBehavior(script=("503",))}) as fleet:
    ...         print(fleet.endpoints[0].base_url)
    ...         async with VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...             answers = await pool.send_all_batched([f"prompt {k}" for k in range(100)])
    ...         print(answers[7].text, all(a.success for a in answers), fleet.counters(1).faults)
    >>> anyio.run(demo)
    http://127.0.0.1:.../v1
    ECHO: prompt 7 True {'503': 1}
    """

    def __init__(
        self,
        n_endpoints: int = 4,
        *,
        model: str = "fake-model",
        max_model_len: int = 4096,
        latency: LatencyModel | None = None,
        behaviors: Mapping[int, EndpointBehavior] | Sequence[EndpointBehavior] | None = None,
        chat_batch: bool = False,
        model_root: str | None = None,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        metrics: bool = True,
        api_key: str | None = None,
        base_path: str = "",
        tls: ssl.SSLContext | None = None,
        in_process: bool = False,
        clock: Clock | None = None,
    ) -> None:
        if n_endpoints < 1:
            raise ValueError(f"n_endpoints must be >= 1, got {n_endpoints}")
        if max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
        if ports is not None and len(ports) != n_endpoints:
            raise ValueError(f"got {len(ports)} ports for {n_endpoints} endpoints")
        base_path = base_path.rstrip("/")
        if base_path and not base_path.startswith("/"):
            raise ValueError(f"base_path must start with '/', got {base_path!r}")
        if clock is not None and not in_process:
            raise ValueError("a clock is for an in-process fleet: pass in_process=True too")
        if in_process:
            host = _LOCAL_HOST
            if ports is None:
                ports = range(_LOCAL_FIRST_PORT, _LOCAL_FIRST_PORT + n_endpoints)
        self._in_process = in_process
        self._clock: Clock = clock if clock is not None else RealClock()
        self._model = model
        self._host = host
        self._base_path = base_path
        self._scheme = "https" if tls is not None else "http"
        self._gauge = FleetGauge()
        config = ServerConfig(
            model=model,
            root=model if model_root is None else model_root,
            max_model_len=max_model_len,
            latency=latency if latency is not None else LatencyModel(),
            chat_batch=chat_batch,
            gauge=self._gauge,
            created=int(time.time()),
            clock=self._clock,
            metrics=metrics,
            api_key=api_key,
            base_path=base_path,
            tls=tls,
        )
        chosen = _behaviors(n_endpoints, behaviors)
        self._servers = [
            FakeServer(i, host, 0 if ports is None else ports[i], config, chosen[i])
            for i in range(n_endpoints)
        ]
        self._state = _State.UNOPENED
        self._startup_seconds = 0.0
        self._transport = (
            MockTransport({(host, s.port): s for s in self._servers}, self._clock)
            if in_process else None
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeFleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> FakeFleet:
        """Start listening on every endpoint; a fleet starts once.

        Returns
        -------
        FakeFleet
            This fleet.

        Raises
        ------
        RuntimeError
            If the fleet was started before.
        OSError
            If a port cannot be bound (it names the port, and the open-file limit when that is
            what ran out); the endpoints started so far are stopped again.
        """
        if self._state is not _State.UNOPENED:
            raise RuntimeError(f"this FakeFleet is {self._state.value}; a fleet starts once")
        self._state = _State.OPEN
        began = time.perf_counter()
        if self._in_process:
            for server in self._servers:
                server.open_local()
            return self
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._state = _State.CLOSED
            raise RuntimeError(
                "a FakeFleet on ports runs in an asyncio event loop; on another (trio), make "
                "it with in_process=True and give the client fleet.transport") from None
        try:
            for first in range(0, len(self._servers), _START_BATCH):
                batch = self._servers[first : first + _START_BATCH]
                results = await asyncio.gather(
                    *(_start(server) for server in batch), return_exceptions=True
                )
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    raise errors[0]
        except BaseException:
            await asyncio.shield(self._stop_all())
            self._state = _State.CLOSED
            raise
        self._startup_seconds = time.perf_counter() - began
        return self

    async def aclose(self) -> None:
        """Stop every endpoint and drop their connections; safe to call again."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._in_process:
            for server in self._servers:
                await server.stop()  # in-process: cancels what is in flight, awaits nothing
            return
        await asyncio.shield(self._stop_all())

    async def _stop_all(self) -> None:
        await asyncio.gather(*(server.stop() for server in self._servers))

    # -- what it is ----------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints, in index order (dead ones included)."""
        return [Endpoint(self._host, server.port, scheme=self._scheme,
                         path=self._base_path + "/v1") for server in self._servers]

    @property
    def model(self) -> str:
        """The served model name."""
        return self._model

    @property
    def in_process(self) -> bool:
        """Whether the endpoints answer in-process through :attr:`transport` (no sockets)."""
        return self._in_process

    @property
    def transport(self) -> MockTransport:
        """The in-process transport to the endpoints, for ``VLLMPool(..., transport=...)``.

        Raises
        ------
        RuntimeError
            If the fleet listens on ports (made without ``in_process=True``).
        """
        if self._transport is None:
            raise RuntimeError("this FakeFleet listens on ports; make it with in_process=True "
                               "for an in-process transport")
        return self._transport

    @property
    def clock(self) -> Clock:
        """The clock of the endpoints' latency model."""
        return self._clock

    @property
    def startup_seconds(self) -> float:
        """How long :meth:`start` took to bind every endpoint."""
        return self._startup_seconds

    def __len__(self) -> int:
        return len(self._servers)

    def __repr__(self) -> str:
        n, state = len(self._servers), self._state.value
        where = ", in-process" if self._in_process else ""
        return f"<FakeFleet {n} endpoints{where}, model={self._model!r}, {state}>"

    def behavior(self, index: int) -> EndpointBehavior:
        """Return the behavior of endpoint ``index``."""
        return self._server(index).behavior

    def is_alive(self, index: int) -> bool:
        """Whether endpoint ``index`` is listening (not killed, not dead by a ``"die"`` action)."""
        return self._server(index).alive

    # -- counters ------------------------------------------------------------------------------

    def counters(self, index: int) -> EndpointCounters:
        """Return a snapshot of what endpoint ``index`` has seen."""
        return self._server(index).counters.snapshot()

    def totals(self) -> EndpointCounters:
        """Return the fleet-wide sums; ``max_in_flight`` is the fleet's own peak."""
        parts = [server.counters.snapshot() for server in self._servers]
        return sum_counters(parts, self._gauge.max_in_flight)

    def total_requests(self) -> int:
        """Return the number of inference requests (completions and chat) the fleet received."""
        total = 0
        for server in self._servers:
            c = server.counters
            total += c.completion_requests + c.chat_requests + c.chat_batch_requests
        return total

    def total_prompts(self) -> int:
        """Return the number of prompts (and conversations) in the fleet's inference requests."""
        return sum(server.counters.prompts_received for server in self._servers)

    def reset_counters(self) -> None:
        """Set every counter of every endpoint to zero."""
        for server in self._servers:
            server.counters.reset()
        self._gauge.max_in_flight = self._gauge.in_flight

    # -- control -------------------------------------------------------------------------------

    async def kill(self, index: int) -> None:
        """Stop endpoint ``index`` now, like SIGKILL: drop its connections, refuse new ones.

        Requests in flight on it get no answer. Killing a dead endpoint does nothing.
        """
        self._check_open()
        await self._server(index).stop()

    async def restart(self, index: int, behavior: EndpointBehavior | None = None) -> None:
        """Start a killed or dead endpoint again on the same port, as a fresh server.

        Its request numbering (for the behavior's ``script``, ``die_after`` and so on) and its
        sequence slots start over; its counters go on. Restarting a live endpoint kills it first.

        Parameters
        ----------
        index : int
            The endpoint.
        behavior : EndpointBehavior or None
            A new behavior, or ``None`` to keep the one it had.
        """
        self._check_open()
        server = self._server(index)
        if server.alive:
            await server.stop()
        if self._in_process:
            server.open_local(behavior)
        else:
            await server.start(behavior)

    def write_hostfile(
        self,
        path: str | os.PathLike[str],
        tags: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
    ) -> Path:
        """Write a hostfile naming every endpoint, one ``host<TAB>port<TAB>model=M`` line each.

        An HTTPS fleet, or one with a ``base_path``, writes each endpoint's base URL instead of
        ``host<TAB>port``.

        The file is written whole and then renamed into place, so a reader never sees half of it.

        Parameters
        ----------
        path : str or ``os.PathLike``
            Where to write.
        tags : Mapping, Sequence of Mapping, or None
            More ``key=value`` columns: the same for every line, or one mapping per endpoint.

        Returns
        -------
        ``pathlib.Path``
            The path written.
        """
        per_line = _tags_per_endpoint(len(self._servers), tags)
        lines = []
        for endpoint, extra in zip(self.endpoints, per_line, strict=True):
            plain = endpoint.scheme == "http" and endpoint.path == "/v1"
            address = [self._host, str(endpoint.port)] if plain else [endpoint.base_url]
            columns = [*address, f"model={self._model}"]
            columns += [f"{key}={value}" for key, value in extra.items()]
            lines.append("\t".join(columns) + "\n")
        target = Path(path)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_text("".join(lines), encoding="utf-8")
        os.replace(partial, target)
        return target

    def _server(self, index: int) -> FakeServer:
        if not -len(self._servers) <= index < len(self._servers):
            raise IndexError(f"endpoint index {index} is out of range 0..{len(self._servers) - 1}")
        return self._servers[index]

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise RuntimeError(f"this FakeFleet is {self._state.value}, not running")


async def _start(server: FakeServer) -> None:
    try:
        await server.start()
    except OSError as exc:
        where = f"{server.host}:{server.port}"
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise OSError(
                exc.errno,
                f"cannot start fake endpoint {server.index} on {where}: too many open files; "
                "raise the open-file limit (ulimit -n) or start fewer endpoints",
            ) from exc
        raise OSError(
            exc.errno, f"cannot start fake endpoint {server.index} on {where}: {exc}"
        ) from exc


def _behaviors(
    n: int, given: Mapping[int, EndpointBehavior] | Sequence[EndpointBehavior] | None
) -> list[EndpointBehavior]:
    default = EndpointBehavior()
    if given is None:
        return [default] * n
    if isinstance(given, Mapping):
        for index in given:
            if not 0 <= index < n:
                raise ValueError(f"behaviors has index {index}, out of range 0..{n - 1}")
        return [given.get(i, default) for i in range(n)]
    if len(given) != n:
        raise ValueError(f"got {len(given)} behaviors for {n} endpoints")
    return list(given)


def _tags_per_endpoint(
    n: int, tags: Mapping[str, str] | Sequence[Mapping[str, str]] | None
) -> list[Mapping[str, str]]:
    if tags is None:
        return [{}] * n
    per_line = [tags] * n if isinstance(tags, Mapping) else list(tags)
    if len(per_line) != n:
        raise ValueError(f"got {len(per_line)} tag mappings for {n} endpoints")
    for mapping in per_line:
        for key, value in mapping.items():
            if not _TAG_KEY.match(key) or not value or any(c.isspace() or c == "#" for c in value):
                raise ValueError(f"tag {key}={value!r} cannot be written as one hostfile column")
    return per_line
