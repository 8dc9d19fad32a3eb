"""One fake vLLM endpoint: routes, fault injection, the latency model and its lifecycle."""

from __future__ import annotations

import asyncio
import errno
import ssl
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import attrs

from ._answers import chat_token_ids, prompt_token_ids
from ._behavior import ActionPicker, EndpointBehavior, is_status_action
from ._clock import Clock
from ._counters import FleetGauge, LiveCounters
from ._http import CLOSED, DROP, HANG, PeerLike, Reply, serve_connection
from ._latency import Booking, LatencyModel, SlotSchedule
from ._protocol import (
    Answers,
    RequestError,
    answer_chats,
    answer_generate,
    answer_inputs,
    answer_prompts,
    chat_body,
    check_model,
    completion_body,
    conversations_of,
    embeddings_body,
    error_body,
    generate_body,
    inputs_of,
    messages_of,
    models_body,
    parse_body,
    prompt_of,
    prompts_of,
)

__all__ = ["FakeServer", "ServerConfig"]

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
CHAT_BATCH = "/v1/chat/completions/batch"
METRICS = "/metrics"
EMBEDDINGS = "/v1/embeddings"
GENERATE = "/generate"
_GET_ROUTES = frozenset({"/health", "/v1/models", "/version", METRICS})
_POST_ROUTES = frozenset({COMPLETIONS, CHAT, CHAT_BATCH, EMBEDDINGS, GENERATE, "/tokenize"})
_VLLM_ONLY_ROUTES = frozenset({"/health", "/version", "/tokenize", METRICS})
_STEP = 0.01  # seconds an engine step of slowness 1 takes, when the model gives no token time
_NOT_FOUND = Reply.json({"detail": "Not Found"}, status=404)
_UNAUTHORIZED = Reply.json({"error": "Unauthorized"}, status=401)  # vLLM's --api-key answer
_NOT_ALLOWED = Reply.json({"detail": "Method Not Allowed"}, status=405)
_HEALTHY = Reply(200, b"", content_type=b"text/plain")
_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
_BAD_JSON = b'{"id":"cmpl-broken","object":"text_completion","choices":[{"index":0,"te'
_BACKLOG = 1024
_Route = Callable[[bytes, PeerLike], Coroutine[Any, Any, Reply]]


class ServerConfig:
    """What every endpoint of a fleet shares."""

    __slots__ = (
        "api_key",
        "base_path",
        "chat_batch",
        "clock",
        "created",
        "gauge",
        "latency",
        "max_model_len",
        "metrics",
        "model",
        "root",
        "tls",
    )

    def __init__(
        self,
        *,
        model: str,
        root: str,
        max_model_len: int,
        latency: LatencyModel,
        chat_batch: bool,
        gauge: FleetGauge,
        created: int,
        clock: Clock,
        metrics: bool = True,
        api_key: str | None = None,
        base_path: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.api_key = api_key
        self.base_path = base_path
        self.tls = tls
        self.clock = clock
        self.model = model
        self.root = root
        self.max_model_len = max_model_len
        self.latency = latency
        self.chat_batch = chat_batch
        self.gauge = gauge
        self.created = created
        self.metrics = metrics


@attrs.define
class _RunTime:
    """Seconds the finished sequences spent running, and how many (vLLM's
    ``vllm:request_inference_time_seconds`` sum and count; one sequence a prompt); and seconds
    they waited for a slot (``vllm:request_queue_time_seconds``)."""

    seconds: float = 0.0
    sequences: int = 0
    queued: float = 0.0


class FakeServer:
    """One endpoint that speaks vLLM's OpenAI API: on a port (an asyncio server), or in-process
    (:meth:`open_local`; a :class:`~aurora_swarm.testing.MockTransport` calls :meth:`handle`)."""

    def __init__(
        self, index: int, host: str, port: int, config: ServerConfig, behavior: EndpointBehavior
    ) -> None:
        self.index = index
        self.host = host
        self.port = port
        self.config = config
        self.counters = LiveCounters(config.gauge)
        self.alive = False
        self._behavior = behavior
        self._picker = ActionPicker(behavior, index)
        self._slots = SlotSchedule(config.latency.max_concurrent_seqs)
        self._ran = _RunTime()
        self._server: asyncio.Server | None = None
        self._server_closed: asyncio.Task[None] | None = None  # set once the server is halted
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.local = False  # in-process: no socket, requests come from a MockTransport
        self.local_requests: set[Any] = set()  # their cancel scopes
        self._models = Reply.json(
            models_body(config.model, config.root, config.max_model_len, config.created)
        )
        self._plain_models = Reply.json(
            models_body(config.model, config.root, None, config.created)
        )
        self._routes: dict[str, _Route] = {
            COMPLETIONS: self._completions,
            CHAT: self._chat,
            CHAT_BATCH: self._chat_batch,
            EMBEDDINGS: self._embeddings,
            GENERATE: self._generate,
            "/tokenize": self._tokenize,
        }

    @property
    def behavior(self) -> EndpointBehavior:
        """The endpoint's behavior."""
        return self._behavior

    async def start(self, behavior: EndpointBehavior | None = None) -> None:
        """Listen (again, on the same port once known), as a freshly started server."""
        if self.alive:
            raise RuntimeError(f"endpoint {self.index} is running already")
        if behavior is not None:
            self._behavior = behavior
        await self._release_server()  # a "die" action halted it; its port frees only now
        self._picker = ActionPicker(self._behavior, self.index)
        self._slots = SlotSchedule(self.config.latency.max_concurrent_seqs)
        self._ran = _RunTime()  # a restarted server's metrics start over
        server = await asyncio.start_server(
            self._on_connect, self.host, self.port, backlog=_BACKLOG, ssl=self.config.tls
        )
        if not server.sockets:  # asyncio skips sockets it cannot create, e.g. out of files
            server.close()
            raise OSError(errno.EMFILE, "no listening socket could be created")
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        self.alive = True

    def open_local(self, behavior: EndpointBehavior | None = None) -> None:
        """Take requests in-process (no socket), as a freshly started server."""
        if self.alive:
            raise RuntimeError(f"endpoint {self.index} is running already")
        if behavior is not None:
            self._behavior = behavior
        self._picker = ActionPicker(self._behavior, self.index)
        self._slots = SlotSchedule(self.config.latency.max_concurrent_seqs)
        self._ran = _RunTime()  # a restarted server's metrics start over
        self.local = True
        self.alive = True

    async def stop(self) -> None:
        """Stop at once, like SIGKILL: stop listening and drop every connection."""
        self._halt()
        if self.local:  # in-process: its requests are cancelled; nothing to wait for
            return
        await self._end_connections()
        await self._release_server()

    async def _release_server(self) -> None:
        """Wait until the halted server's listener is closed and every connection it accepted."""
        closed = self._server_closed
        if closed is not None:
            await asyncio.shield(closed)
            self._server = self._server_closed = None

    async def _end_connections(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in self._connections if task is not current]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _halt(self) -> None:
        self.alive = False
        for scope in list(self.local_requests):
            scope.cancel()
        if self.local:
            return
        if self._server is not None and self._server_closed is None:
            self._server_closed = _close_server(self._server)
        current = asyncio.current_task()
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            if task is not current:
                task.cancel()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if not self.alive or task is None:
            writer.transport.abort()
            return
        self._connections[task] = writer
        try:
            await serve_connection(reader, writer, self.handle)
        except asyncio.CancelledError:
            # Only stop() cancels this task, the root of the connection, and it waits for the
            # task to end. Ending it cancelled would make asyncio (before 3.12) log an error.
            pass
        finally:
            del self._connections[task]

    async def handle(self, method: str, path: str, body: bytes, peer: PeerLike) -> Reply:
        """Answer one request."""
        routes = self.counters.routes
        config = self.config
        if config.base_path:
            if not path.startswith(config.base_path + "/"):
                routes["other"] += 1
                return _NOT_FOUND
            path = path[len(config.base_path):]
        if config.api_key is not None and path.startswith("/v1/") and (
            peer.authorization != b"Bearer " + config.api_key.encode()
        ):
            routes["unauthorized"] += 1
            return _UNAUTHORIZED
        if (path == METRICS and not config.metrics) or (
            not self._behavior.vllm_extras and path in _VLLM_ONLY_ROUTES
        ):
            routes["other"] += 1
            return _NOT_FOUND
        if method == "GET" and path in _GET_ROUTES:
            routes[path] += 1
            if path == METRICS:
                return self._metrics()
            if path == "/v1/models":
                return self._models if self._behavior.vllm_extras else self._plain_models
            if path == "/version":
                return Reply.json({"version": "0.0.0+aurora-swarm-fake"})
            return _HEALTHY
        if method == "POST" and path in _POST_ROUTES:
            routes[path] += 1
            if path == CHAT_BATCH and not self.config.chat_batch:
                return _NOT_FOUND
            try:
                return await self._routes[path](body, peer)
            except Exception:  # a bug in the fake server: show it to the client, keep serving
                return Reply.json(error_body(traceback.format_exc(), 500), status=500)
        if path in _GET_ROUTES or path in _POST_ROUTES:
            routes[path] += 1
            return _NOT_ALLOWED
        routes["other"] += 1
        return _NOT_FOUND

    async def _completions(self, body: bytes, peer: PeerLike) -> Reply:
        self.counters.completion_requests += 1
        behavior = self._behavior
        if not behavior.list_prompts:
            refusal = self._refuse_list(
                body, "prompt", behavior.list_prompt_status,
                "invalid prompt: a completion request takes one string prompt")
            if refusal is not None:
                return refusal
        return await self._infer(body, peer, prompts_of, answer_prompts, completion_body)

    async def _chat(self, body: bytes, peer: PeerLike) -> Reply:
        self.counters.chat_requests += 1

        def one(doc: dict[str, Any]) -> list[list[dict[str, Any]]]:
            return [messages_of(doc.get("messages"))]

        return await self._infer(body, peer, one, answer_chats, chat_body)

    async def _chat_batch(self, body: bytes, peer: PeerLike) -> Reply:
        self.counters.chat_batch_requests += 1
        return await self._infer(body, peer, conversations_of, answer_chats, chat_body)

    async def _embeddings(self, body: bytes, peer: PeerLike) -> Reply:
        behavior = self._behavior
        if behavior.list_inputs:
            return await self._infer(body, peer, inputs_of, answer_inputs, embeddings_body)
        if behavior.list_input_status is not None:
            refusal = self._refuse_list(
                body, "input", behavior.list_input_status,
                "invalid input: an embeddings request takes one string input")
            if refusal is not None:
                return refusal

        def first_only(doc: dict[str, Any]) -> list[str]:
            return inputs_of(doc)[:1]  # a server that embeds one text a request

        return await self._infer(body, peer, first_only, answer_inputs, embeddings_body)

    async def _generate(self, body: bytes, peer: PeerLike) -> Reply:
        return await self._infer(body, peer, prompt_of, answer_generate, generate_body)

    async def _infer(
        self,
        body: bytes,
        peer: PeerLike,
        items_of: Callable[[dict[str, Any]], list[Any]],
        answer: Callable[[dict[str, Any], list[Any], int], Answers],
        render: Callable[[str, Answers, list[int]], dict[str, Any]],
    ) -> Reply:
        counters = self.counters
        counters.enter()
        try:
            action = self._picker.next_action()
            error: RequestError | None = None
            try:
                doc = parse_body(body)
                counters.add_special_tokens[doc.get("add_special_tokens")] += 1
                items = items_of(doc)
                counters.prompts_received += len(items)
            except RequestError as exc:
                items, error = [], exc
            if action != "ok":
                counters.faults[action] += 1
                fault = self._fault(action)
                if fault is not None:
                    return fault
            if error is None:
                try:
                    check_model(doc, self.config.model)
                    answers = answer(doc, items, self.config.max_model_len)
                except RequestError as exc:
                    error = exc
            if error is not None:
                counters.rejected += 1
                return Reply.json(
                    error_body(error.message, error.status, error.param), error.status
                )
            if not await self._serve_time(answers.completion_tokens, peer):
                counters.abandoned += 1
                return CLOSED
            order = self._order(action, len(items))
            counters.choices_returned += len(order)
            return Reply.json(render(self.config.model, answers, order))
        finally:
            counters.leave()

    def _refuse_list(self, body: bytes, field: str, status: int, message: str) -> Reply | None:
        """The refusal of a list in ``field`` by a server that takes one string a request."""
        try:
            value = parse_body(body).get(field)
        except RequestError:
            return None  # the usual path answers a bad body
        if not isinstance(value, list):
            return None
        self.counters.rejected += 1
        return Reply.json(error_body(message, status, field), status)

    def _fault(self, action: str) -> Reply | None:
        """The reply of a fault that ignores the request, or ``None`` for one that answers it."""
        if is_status_action(action):
            status = int(action)
            headers: tuple[tuple[bytes, bytes], ...] = ()
            if status == 429:
                headers = ((b"retry-after", f"{self._behavior.retry_after:g}".encode()),)
            message = f"injected fault: HTTP {status} from fake endpoint {self.index}"
            return Reply.json(error_body(message, status), status, headers)
        if action == "drop":
            return DROP
        if action == "hang":
            return HANG
        if action == "badjson":
            return Reply(200, _BAD_JSON)
        if action == "die":
            self._halt()
            return CLOSED
        return None

    def _order(self, action: str, n: int) -> list[int]:
        """The list positions of the choices to send, as ``action`` garbles them."""
        order = list(range(n))
        if action == "shuffle" and n > 1:
            self._picker.shuffle_rng.shuffle(order)
            if order == sorted(order):
                order.reverse()
        elif action == "partial":
            order.pop()
        elif action == "dup":
            if n > 1:
                order[-1] = order[0]
            else:
                order.append(order[0])
        return order

    async def _serve_time(self, completion_tokens: list[int], peer: PeerLike) -> bool:
        """Wait as the latency model says; ``False`` if the client left first (work aborted)."""
        latency = self.config.latency
        if latency.is_instant:
            return True
        clock = self.config.clock
        ready = clock.now() + latency.request_overhead
        slowness = self._behavior.slowness
        services: list[float]
        if latency.token_time:
            services = [latency.service_time(c, slowness) for c in completion_tokens]
        elif latency.prompt_time:
            services = [latency.prompt_time * slowness] * len(completion_tokens)
        else:
            services = []
        schedule = self._slots  # the one booked on, even if a restart replaces it meanwhile
        booking = schedule.book(ready, services)
        try:
            while (delay := booking.due - clock.now()) > 0:
                if not await (_wait_local if self.local else _wait)(
                        schedule, booking, delay, peer, clock.now()):
                    return False
            self._ran.seconds += sum(services)
            self._ran.sequences += len(services)
            self._ran.queued += sum(booking.starts) - booking.ready * len(booking.starts)
            return True
        finally:
            # Answered, or aborted (client gone, or the endpoint stopped): free what is left.
            self.counters.aborted_prompts += schedule.leave(booking, clock.now())

    def _metrics(self) -> Reply:
        """vLLM's queue gauges in Prometheus text, counting prompts (vLLM's sequences); its
        past sequences' running time; and its generated tokens and engine steps.

        The engine is taken to step every ``token_time`` (10 ms without one) times the
        endpoint's slowness while any prompt holds a slot, each such prompt gaining a token a
        step: generated tokens over steps is then how many prompts ran at once, on average,
        while the endpoint was busy, as on vLLM (prefill is not modelled).
        """
        now = self.config.clock.now()
        running, waiting = self._slots.counts(now)
        slot_seconds, busy_seconds = self._slots.work(now)
        step = (self.config.latency.token_time or _STEP) * self._behavior.slowness
        tokens, steps = (slot_seconds / step, busy_seconds / step) if step > 0 else (0.0, 0.0)
        label = f'{{model_name="{_label_value(self.config.model)}"}}'
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{label} {float(running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{label} {float(waiting)}",
            "# HELP vllm:request_inference_time_seconds Histogram of time spent in RUNNING "
            "phase for request.",
            "# TYPE vllm:request_inference_time_seconds histogram",
            f"vllm:request_inference_time_seconds_sum{label} {self._ran.seconds!r}",
            f"vllm:request_inference_time_seconds_count{label} {float(self._ran.sequences)}",
            "# HELP vllm:request_queue_time_seconds Histogram of time spent in WAITING phase "
            "for request.",
            "# TYPE vllm:request_queue_time_seconds histogram",
            f"vllm:request_queue_time_seconds_sum{label} {self._ran.queued!r}",
            f"vllm:request_queue_time_seconds_count{label} {float(self._ran.sequences)}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{label} {float(round(tokens))}",
            "# HELP vllm:iteration_tokens_total Histogram of number of tokens per engine_step.",
            "# TYPE vllm:iteration_tokens_total histogram",
            f"vllm:iteration_tokens_total_sum{label} {float(round(tokens))}",
            f"vllm:iteration_tokens_total_count{label} {float(round(steps))}",
        ]
        return Reply(200, ("\n".join(lines) + "\n").encode(), content_type=_PROMETHEUS)

    async def _tokenize(self, body: bytes, _peer: PeerLike) -> Reply:
        try:
            doc = parse_body(body)
            check_model(doc, self.config.model)
            special = doc.get("add_special_tokens")
            self.counters.add_special_tokens[special] += 1
            if "messages" in doc:
                messages = messages_of(doc.get("messages"))
                tokens = chat_token_ids(messages, bool(special or False))
            elif isinstance(doc.get("prompt"), str):
                tokens = prompt_token_ids(doc["prompt"], True if special is None else bool(special))
            else:
                raise RequestError("give prompt (a string) or messages", param="prompt")
        except RequestError as exc:
            return Reply.json(error_body(exc.message, exc.status, exc.param), exc.status)
        max_len = self.config.max_model_len
        return Reply.json(
            {"count": len(tokens), "max_model_len": max_len, "tokens": tokens, "token_strs": None}
        )


def _close_server(server: asyncio.Server) -> asyncio.Task[None]:
    """Stop accepting connections now and close ``server`` soon; a task that ends once it is closed
    and every connection it accepted is gone.

    asyncio accepts a connection in one loop step and makes its transport in a task that runs a
    step later; the transport registers with its server, and if the server was closed meanwhile
    that fails (an assertion in ``asyncio.Server._attach``, swallowed) and leaves the accepted
    socket to the garbage collector, never closed. So the listening sockets leave the selector at
    once, and ``close()`` waits behind the transport-making steps already queued (the loop runs
    callbacks first in, first out); the connections made meanwhile find the endpoint stopped and
    abort themselves. ``wait_closed()`` starts before ``close()`` runs: only then does it wait for
    the server's connections as well (before Python 3.12 it returns at once on a closed server).
    """
    loop = asyncio.get_running_loop()
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())
    closed = loop.create_task(server.wait_closed())
    loop.call_soon(server.close)
    return closed


async def _wait(
    schedule: SlotSchedule, booking: Booking, delay: float, peer: PeerLike, now: float
) -> bool:
    """Sleep ``delay`` seconds or until the booking's due time moves; ``False`` if the client left.

    A booking that can no longer move (all its prompts started, or no slot limit) sleeps on the
    peer alone, without a second task.
    """
    loop = asyncio.get_running_loop()
    if not schedule.may_move(booking, now):
        return await peer.sleep(delay)
    wake = anyio.Event()
    booking.wake = wake
    sleeper = loop.create_task(peer.sleep(delay))
    waker = loop.create_task(wake.wait())
    try:
        await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
    finally:
        booking.wake = None
        for task in (sleeper, waker):
            if not task.done():
                task.cancel()
        await asyncio.wait((sleeper, waker))
    return sleeper.cancelled() or sleeper.result()


async def _wait_local(
    schedule: SlotSchedule, booking: Booking, delay: float, peer: PeerLike, now: float
) -> bool:
    """:func:`_wait` for an in-process endpoint, on any event loop (anyio).

    A booking that can no longer move (all its prompts started, or no slot limit) sleeps on the
    peer alone, without a second task.
    """
    if not schedule.may_move(booking, now):
        return await peer.sleep(delay)
    wake = anyio.Event()
    booking.wake = wake
    stayed = True
    try:
        async with anyio.create_task_group() as group:

            async def sleep() -> None:
                nonlocal stayed
                stayed = await peer.sleep(delay)
                group.cancel_scope.cancel()

            async def moved() -> None:
                await wake.wait()
                group.cancel_scope.cancel()

            group.start_soon(sleep)
            group.start_soon(moved)
    finally:
        booking.wake = None
    return stayed


def _label_value(text: str) -> str:
    """``text`` escaped as a Prometheus label value."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
