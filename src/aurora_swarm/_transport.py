"""Request shaping and response parsing: the only module that speaks HTTP.

One :class:`Transport` per pool family holds one shared HTTP connection pool and one
``AsyncOpenAI`` client per endpoint (made on first use, sharing that connection pool). The
OpenAI client's own retries are off: :mod:`aurora_swarm._retry` is the one retry layer.

Completions are read as plain JSON (``cast_to=object``) rather than typed models: a batched
answer holds thousands of choices, and building a model object per choice would cost more
client CPU than everything else on the per-prompt path. Embeddings go through the client's
typed call, ``embeddings.create(model=..., input=...)``: that call is what users mock, and the
client asks the server for base64 vectors and decodes them itself, which keeps a large answer
small.
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import time
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import attrs
import httpx2
import openai

from ._endpoint import Endpoint
from ._exceptions import (
    BadResponseError,
    ConfigurationError,
    ConnectError,
    HTTPStatusError,
    RequestError,
    RequestTimeout,
    SwarmError,
)
from ._response import Usage
from ._sockets import close_on_cancelled_handshakes

__all__ = ["Choice", "ModelInfo", "Transport"]

Message = Mapping[str, Any]


@attrs.frozen
class Choice:
    """One answered prompt of a request: the parsed choice, before it becomes a Response.

    An embeddings request's choices carry their vector in ``embedding`` (and no text).
    """

    text: str
    finish_reason: str | None
    embedding: list[float] | None = None


@attrs.frozen
class BatchReply:
    """What one batched request returned.

    ``choices[k]`` answers the request's k-th prompt, or is a :class:`BadResponseError` when the
    server's choices left that prompt unanswered (missing, duplicated or out-of-range index).
    """

    choices: list[Choice | BadResponseError]
    usage: Usage | None
    latency: float


@attrs.frozen
class EmbeddingsReply(BatchReply):
    """What one ``/v1/embeddings`` request with a list input returned.

    ``items`` is how many vectors the answer held, placed or not: fewer than the texts sent
    tells of a server that embeds one text a request.
    """

    items: int


@attrs.frozen
class ModelInfo:
    """What ``/v1/models`` says about the served model.

    Attributes
    ----------
    id:
        The served model name.
    max_model_len:
        The context length in tokens, when the server reports it (vLLM does).
    root:
        Where the server loaded the model from (vLLM: the model directory), when reported.
    """

    id: str
    max_model_len: int | None
    root: str | None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from inference servers; fall back to our own backoff


def proxy_note(
    proxy: str, bypass: str = "VLLMPool(env_proxies=False) / aurora-swarm run --no-env-proxy"
) -> str:
    """What to say about a proxy a failed request went through, and how to bypass it."""
    return (f" [through the proxy {redact_url(proxy)} set in the environment (http_proxy, "
            "https_proxy or all_proxy); if the servers are reachable directly, add their hosts "
            f"to no_proxy, or pass {bypass}]")


def redact_url(url: str) -> str:
    """``url`` without a user name or password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def translate_error(
    exc: BaseException, endpoint: Endpoint, proxy: str | None = None
) -> RequestError:
    """Map an exception from the HTTP stack to our error tree (keeping the original as cause).

    When the request went through ``proxy``, connection errors and timeouts name it.
    """
    if isinstance(exc, RequestError):
        return exc
    error: RequestError
    note = proxy_note(proxy) if proxy is not None else ""
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        error = RequestTimeout("no answer before the request's timeout" + note,
                               endpoint=endpoint)
    elif isinstance(exc, openai.APIStatusError):
        response = exc.response
        body = response.text[:500] if response is not None else ""
        error = HTTPStatusError(
            exc.status_code,
            _status_message(exc, body),
            endpoint=endpoint,
            retry_after=_retry_after(response.headers) if response is not None else None,
            body=body,
        )
    elif isinstance(exc, openai.APIConnectionError | httpx2.TransportError | OSError):
        reason = exc.__cause__ or exc
        error = ConnectError(f"connection failed ({type(reason).__name__}: {reason}){note}",
                             endpoint=endpoint)
    elif isinstance(exc, openai.APIResponseValidationError | ValueError | KeyError | TypeError):
        error = BadResponseError(f"unreadable answer ({exc})", endpoint=endpoint)
    else:
        raise exc
    error.__cause__ = exc
    return error


def _status_message(exc: openai.APIStatusError, body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip() or exc.message
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return body.strip() or exc.message


def place_choices(raw: Any, count: int, endpoint: Endpoint) -> list[Choice | BadResponseError]:
    """Put each choice in the slot its ``index`` names.

    Servers may return choices in any order. A missing, duplicated or out-of-range index marks
    exactly the affected prompts as failed; everything else is kept.
    """
    if not isinstance(raw, list):
        raise BadResponseError("answer has no 'choices' list", endpoint=endpoint)
    slots: list[Choice | BadResponseError | None] = [None] * count
    for position, item in enumerate(raw):
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            # A choice we cannot place answers nobody; the prompts it should have answered
            # stay empty and are reported as missing below.
            continue
        if slots[index] is not None:
            slots[index] = BadResponseError(
                f"choice index {index} appears more than once (again at position {position})",
                endpoint=endpoint,
            )
            continue
        slots[index] = _read_choice(item, endpoint)
    return [
        slot if slot is not None
        else BadResponseError(f"no choice with index {k} in the answer", endpoint=endpoint)
        for k, slot in enumerate(slots)
    ]


def place_embeddings(
    items: Any, count: int, endpoint: Endpoint
) -> list[Choice | BadResponseError]:
    """Put each vector of an embeddings answer in the slot its ``index`` names.

    ``items`` is the answer's ``data``: JSON objects, or the OpenAI client's typed items. As
    :func:`place_choices`: a missing, duplicated or out-of-range index, or an item without a
    sequence of numbers, fails exactly the inputs it affects. When no item carries an index and
    there are as many items as inputs, item ``k`` is input ``k``'s (a server that leaves the
    index out); when the counts differ too, which vector is whose cannot be told and every input
    fails, saying so.
    """
    if not isinstance(items, list | tuple):
        raise BadResponseError("answer has no 'data' list", endpoint=endpoint)
    indices = [_field(item, "index") for item in items]
    if not any(_is_index(index) for index in indices):
        if len(items) != count:
            error = BadResponseError(
                f"the answer's {len(items)} embeddings carry no index, for {count} inputs: "
                "which vector is whose cannot be told", endpoint=endpoint)
            return [error] * count
        indices = list(range(count))
    slots: list[Choice | BadResponseError | None] = [None] * count
    for position, (item, index) in enumerate(zip(items, indices, strict=True)):
        if not _is_index(index) or not 0 <= index < count:
            continue
        if slots[index] is not None:
            slots[index] = BadResponseError(
                f"embedding index {index} appears more than once (again at position {position})",
                endpoint=endpoint)
            continue
        slots[index] = _read_vector(_field(item, "embedding"), index, endpoint)
    return [
        slot if slot is not None
        else BadResponseError(f"no embedding with index {k} in the answer", endpoint=endpoint)
        for k, slot in enumerate(slots)
    ]


def _field(item: Any, name: str) -> Any:
    """``item[name]`` of a JSON object, else the attribute (``None`` when there is neither)."""
    if isinstance(item, dict):
        return item.get(name)
    return getattr(item, name, None)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_vector(vector: Any, index: int, endpoint: Endpoint) -> Choice | BadResponseError:
    """A vector is any sequence of numbers (a JSON list, the client's decoded base64)."""
    if (not isinstance(vector, Sequence) or isinstance(vector, str | bytes)
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector)):
        return BadResponseError(f"embedding {index} is not a list of numbers", endpoint=endpoint)
    return Choice("", None, [float(x) for x in vector])


def _read_choice(item: dict[str, Any], endpoint: Endpoint) -> Choice | BadResponseError:
    text = item.get("text")
    if text is None:
        message = item.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if text is None and isinstance(message, dict):
            text = ""  # a chat answer with only reasoning/tool calls has no content
    if not isinstance(text, str):
        return BadResponseError(f"choice {item.get('index')} has no text", endpoint=endpoint)
    reason = item.get("finish_reason")
    return Choice(text, reason if isinstance(reason, str) else None)


def read_usage(data: Mapping[str, Any]) -> Usage | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return Usage(
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


def _typed_usage(usage: Any) -> Usage | None:
    """The usage of a typed answer (an embedding has prompt tokens only)."""
    prompt = getattr(usage, "prompt_tokens", None)
    if not isinstance(prompt, int) or isinstance(prompt, bool):
        return None
    return Usage(prompt, 0)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The verifying TLS context every HTTPS endpoint's pool shares, made on first need.

    Loading the system's certificates takes ~20 ms: once per process, not per endpoint or pool.
    """
    return httpx2.create_ssl_context()


@functools.cache
def _ca_bundle_context(path: str) -> ssl.SSLContext:
    """A verifying TLS context that trusts the certificates of one CA bundle (file or folder)."""
    if os.path.isdir(path):
        return ssl.create_default_context(capath=path)
    return ssl.create_default_context(cafile=path)


def _unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


TLSVerify = bool | str | os.PathLike[str]
"""``True`` (verify against the system's CAs), ``False`` (do not verify), or a CA bundle path."""


def check_verify(verify: object) -> TLSVerify:
    """Check a ``verify`` setting; a CA bundle must exist and be readable as one."""
    if isinstance(verify, bool):
        return verify
    if not isinstance(verify, str | os.PathLike):
        raise ConfigurationError(
            f"verify must be True, False or a CA bundle path, got {type(verify).__name__}")
    path = os.fspath(verify)
    try:
        _ca_bundle_context(path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot use {path!r} as a CA bundle: {exc}") from exc
    return path


# A plain-HTTP endpoint never opens TLS, yet its HTTP client wants a context. This one trusts no
# certificate, so it could only ever refuse a connection, never accept an unverified one; it
# costs well under a millisecond where a verifying one costs ~20 ms.
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


# The OpenAI client describes its platform in eight headers on every request, and its retry
# count and read timeout in two more. An inference server ignores them; building and
# validating them is a good part of the client's CPU time per request, which batched dispatch
# pays hundreds of times a call. Omitted, by the client's own mechanism for removing headers.
_LEAN_HEADERS: dict[str, str] = {
    name: openai.Omit()  # type: ignore[misc]
    for name in (
        "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
        "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async",
    )
}
_LEAN_REQUEST_HEADERS: dict[str, str] = {
    name: openai.Omit()  # type: ignore[misc]
    for name in ("x-stainless-retry-count", "x-stainless-read-timeout")
}


class Transport:
    """Shapes requests to many endpoints; each endpoint has its own HTTP connection pool.

    One pool per endpoint, not one shared by all: the HTTP stack scans every connection of a
    pool whenever a request starts or ends, so a single pool over a hundred endpoints spends
    most of the client's CPU in that scan (measured: 76 against 25 microseconds a prompt at
    100 endpoints). Per-endpoint pools keep that cost flat in the number of endpoints.
    """

    def __init__(
        self,
        *,
        api_key: str,
        connect_timeout: float,
        max_connections: int | None,
        api_keys: Mapping[Endpoint, str] | None = None,
        verify: TLSVerify = True,
        env_proxies: bool = True,
        http_transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key
        self._api_keys = dict(api_keys or {})
        self._http_transport = http_transport
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._verify = verify
        self._env_proxies = env_proxies
        self._proxies: dict[Endpoint, str | None] = {}
        self._found_proxies: dict[str, str] | None = None  # the environment's, read once
        self._https: dict[Endpoint, httpx2.AsyncClient] = {}
        self._clients: dict[Endpoint, openai.AsyncOpenAI] = {}

    def __repr__(self) -> str:
        return f"<Transport: {len(self._https)} endpoints connected>"  # never a key

    def proxy_for(self, endpoint: Endpoint) -> str | None:
        """The proxy requests to ``endpoint`` go through, from the environment, or ``None``.

        ``http_proxy`` / ``https_proxy`` (by the endpoint's scheme) or ``all_proxy``, unless
        ``no_proxy`` names the host (or the pool was made with ``env_proxies=False``). Read from
        the environment once per pool, when its first request is made (scanning the
        environment once per endpoint cost a fifth of a millisecond each).
        """
        if endpoint in self._proxies:
            return self._proxies[endpoint]
        proxy: str | None = None
        if self._env_proxies:
            if self._found_proxies is None:
                self._found_proxies = urllib.request.getproxies_environment()
            found = self._found_proxies
            bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
            if not bypass(endpoint.host, found):
                proxy = found.get(endpoint.scheme) or found.get("all")
        self._proxies[endpoint] = proxy
        return proxy

    def _ssl_context(self, endpoint: Endpoint) -> ssl.SSLContext:
        if endpoint.scheme != "https":
            return _NO_TLS
        if self._verify is True:
            return _tls_context()
        if self._verify is False:
            return _unverified_context()
        return _ca_bundle_context(os.fspath(self._verify))

    def _http(self, endpoint: Endpoint) -> httpx2.AsyncClient:
        http = self._https.get(endpoint)
        if http is None:
            key = self._api_keys.get(endpoint, self._api_key)
            extra: dict[str, Any] = {}
            if self._http_transport is not None:
                extra["transport"] = self._http_transport
            http = openai.DefaultAsyncHttpxClient(
                **extra,
                verify=self._ssl_context(endpoint),
                # Our own calls (/v1/models, /tokenize, /health) need the key too; the OpenAI
                # client sets the same header on its requests.
                headers={"Authorization": f"Bearer {key}"},
                # The proxy is chosen here (proxy_for), so errors can name it; the HTTP stack
                # reads nothing more from the environment.
                proxy=self.proxy_for(endpoint),
                trust_env=False,
                timeout=httpx2.Timeout(None, connect=self._connect_timeout),
                limits=httpx2.Limits(
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_connections,
                    keepalive_expiry=60.0,
                ),
            )
            proxy = self.proxy_for(endpoint)
            if self._http_transport is None and (
                    endpoint.scheme == "https" or (proxy or "").startswith("https:")):
                # Only connections that shake hands pay for the wrapper (see _sockets).
                close_on_cancelled_handshakes(http)
            self._https[endpoint] = http
        return http

    def client(self, endpoint: Endpoint) -> openai.AsyncOpenAI:
        """The endpoint's OpenAI client (made on first use, on the endpoint's connection pool)."""
        client = self._clients.get(endpoint)
        if client is None:
            client = openai.AsyncOpenAI(
                base_url=endpoint.base_url,
                api_key=self._api_keys.get(endpoint, self._api_key),
                max_retries=0,
                http_client=self._http(endpoint),
                default_headers=_LEAN_HEADERS,
            )
            # The client looks up the OS on its first request, in a worker thread, only for
            # the X-Stainless-OS header, which _LEAN_HEADERS leaves out: over 4,000 endpoints
            # those thread hops cost a fresh pool 0.6 s of CPU. Nothing needs looking up.
            if getattr(client, "_platform", "") is None:
                client._platform = "Unknown"  # openai's own value when it cannot tell
            self._clients[endpoint] = client
        return client

    async def _post(
        self, endpoint: Endpoint, path: str, body: Mapping[str, Any], timeout: float | None
    ) -> Any:
        # The HTTP stack's timeout bounds each read, not the request: a server that sends a
        # byte now and then would hold it forever. The deadline makes it a bound on the whole.
        try:
            with anyio.fail_after(timeout):
                return await self.client(endpoint).post(
                    path, cast_to=object, body=body,
                    options={"timeout": timeout, "headers": _LEAN_REQUEST_HEADERS},
                )
        except (openai.OpenAIError, httpx2.HTTPError, OSError, ValueError) as exc:
            raise translate_error(exc, endpoint, self.proxy_for(endpoint)) from exc

    async def completions(
        self,
        endpoint: Endpoint,
        prompts: Sequence[str],
        params: Mapping[str, Any],
        timeout: float | None,
    ) -> BatchReply:
        """ONE ``/v1/completions`` request with a list prompt; choices placed by index."""
        body = {**params, "prompt": list(prompts)}
        return await self._batch(endpoint, "/completions", body, len(prompts), timeout)

    async def completion(
        self,
        endpoint: Endpoint,
        prompt: str,
        params: Mapping[str, Any],
        timeout: float | None,
    ) -> tuple[Choice, Usage | None]:
        """ONE ``/v1/completions`` request with one string prompt (servers that take no list)."""
        reply = await self._batch(endpoint, "/completions", {**params, "prompt": prompt}, 1,
                                  timeout)
        (choice,) = reply.choices
        if isinstance(choice, SwarmError):
            raise choice
        return choice, reply.usage

    async def chat_batch(
        self,
        endpoint: Endpoint,
        conversations: Sequence[Sequence[Message]],
        params: Mapping[str, Any],
        timeout: float | None,
    ) -> BatchReply:
        """ONE ``/v1/chat/completions/batch`` request with a list of conversations."""
        body = {**params, "messages": [list(c) for c in conversations]}
        return await self._batch(endpoint, "/chat/completions/batch", body, len(conversations),
                                 timeout)

    async def _batch(
        self, endpoint: Endpoint, path: str, body: Mapping[str, Any], count: int,
        timeout: float | None,
    ) -> BatchReply:
        start = time.perf_counter()
        data = await self._post(endpoint, path, body, timeout)
        if not isinstance(data, dict):
            raise BadResponseError("answer is not a JSON object", endpoint=endpoint)
        choices = place_choices(data.get("choices"), count, endpoint)
        return BatchReply(choices, read_usage(data), time.perf_counter() - start)

    async def embeddings(
        self,
        endpoint: Endpoint,
        texts: Sequence[str],
        params: Mapping[str, Any],
        timeout: float | None,
    ) -> EmbeddingsReply:
        """ONE ``/v1/embeddings`` request with a list input; vectors placed by ``index``.

        Only ``params["model"]`` is sent besides the texts (see :meth:`_create_embeddings`).
        """
        start = time.perf_counter()
        items, usage = await self._create_embeddings(endpoint, list(texts), params, timeout)
        choices = place_embeddings(items, len(texts), endpoint)
        return EmbeddingsReply(choices, usage, time.perf_counter() - start, len(items))

    async def embedding(
        self,
        endpoint: Endpoint,
        text: str,
        params: Mapping[str, Any],
        timeout: float | None,
    ) -> tuple[Choice, Usage | None]:
        """ONE ``/v1/embeddings`` request with one string input (servers that embed one text a
        request take it; so does every other)."""
        items, usage = await self._create_embeddings(endpoint, text, params, timeout)
        (choice,) = place_embeddings(items, 1, endpoint)
        if isinstance(choice, SwarmError):
            raise choice
        return choice, usage

    async def _create_embeddings(
        self, endpoint: Endpoint, texts: str | list[str], params: Mapping[str, Any],
        timeout: float | None,
    ) -> tuple[Any, Usage | None]:
        """The items of the answer's ``data`` and its usage.

        Sent as ``embeddings.create(model=..., input=...)``, those two arguments and no more
        whatever else ``params`` holds: that typed call is what users' mocks of
        ``openai.AsyncOpenAI`` (and the earlier system's tests) replace, and such a mock takes
        no other argument. So no per-request option either: the deadline bounds the whole
        request, as in :meth:`_post`.
        """
        client = self.client(endpoint)
        try:
            with anyio.fail_after(timeout):
                answer = await client.embeddings.create(model=params["model"], input=texts)
        except (openai.OpenAIError, httpx2.HTTPError, OSError, ValueError) as exc:
            raise translate_error(exc, endpoint, self.proxy_for(endpoint)) from exc
        return getattr(answer, "data", None), _typed_usage(getattr(answer, "usage", None))

    async def chat(
        self,
        endpoint: Endpoint,
        messages: Sequence[Message],
        params: Mapping[str, Any],
        timeout: float | None,
    ) -> tuple[Choice, Usage | None, float]:
        """One ``/v1/chat/completions`` request."""
        start = time.perf_counter()
        data = await self._post(endpoint, "/chat/completions",
                                {**params, "messages": list(messages)}, timeout)
        if not isinstance(data, dict):
            raise BadResponseError("answer is not a JSON object", endpoint=endpoint)
        (choice,) = place_choices(data.get("choices"), 1, endpoint)
        if isinstance(choice, SwarmError):
            raise choice
        return choice, read_usage(data), time.perf_counter() - start

    async def generate(
        self, endpoint: Endpoint, prompt: str, timeout: float | None
    ) -> tuple[str, float]:
        """One ``POST /generate`` with ``{"prompt": ...}``: the answer's text and latency.

        The answer is read from the ``response`` field of the JSON reply, else ``text``.
        """
        start = time.perf_counter()
        try:
            reply = await self._http(endpoint).post(
                endpoint.url + "/generate", json={"prompt": prompt}, timeout=timeout)
            reply.raise_for_status()
            data = reply.json()
        except httpx2.HTTPStatusError as exc:
            raise HTTPStatusError(
                exc.response.status_code, exc.response.text[:200] or "/generate failed",
                endpoint=endpoint, retry_after=_retry_after(exc.response.headers),
            ) from exc
        except (httpx2.HTTPError, OSError, ValueError) as exc:
            raise translate_error(exc, endpoint) from exc
        text = data.get("response", data.get("text")) if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise BadResponseError("/generate answer has no 'response' or 'text' string",
                                   endpoint=endpoint)
        return text, time.perf_counter() - start

    async def _get_json(self, endpoint: Endpoint, url: str, timeout: float) -> Any:
        try:
            response = await self._http(endpoint).get(url, timeout=timeout)
            response.raise_for_status()
            return response.json()
        except httpx2.HTTPStatusError as exc:
            raise HTTPStatusError(exc.response.status_code, exc.response.text[:200],
                                  endpoint=endpoint) from exc
        except (httpx2.HTTPError, OSError, ValueError) as exc:
            raise translate_error(exc, endpoint, self.proxy_for(endpoint)) from exc

    async def models(self, endpoint: Endpoint, timeout: float = 10.0) -> list[ModelInfo]:
        """The models the endpoint serves, from ``/v1/models``."""
        data = await self._get_json(endpoint, endpoint.base_url + "/models", timeout)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise BadResponseError("/v1/models answer has no 'data' list", endpoint=endpoint)
        found = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                length = item.get("max_model_len")
                root = item.get("root")
                found.append(ModelInfo(
                    item["id"],
                    length if isinstance(length, int) else None,
                    root if isinstance(root, str) else None,
                ))
        return found

    async def count_tokens(
        self, endpoint: Endpoint, model: str, prompt: str, *, add_special_tokens: bool = True,
        timeout: float = 30.0,
    ) -> int:
        """Exact prompt length in tokens, from vLLM's ``/tokenize``."""
        try:
            response = await self._http(endpoint).post(
                endpoint.url + "/tokenize",
                json={"model": model, "prompt": prompt, "add_special_tokens": add_special_tokens},
                timeout=timeout,
            )
            response.raise_for_status()
            data = response.json()
        except httpx2.HTTPStatusError as exc:
            raise HTTPStatusError(exc.response.status_code, "/tokenize failed",
                                  endpoint=endpoint) from exc
        except (httpx2.HTTPError, OSError, ValueError) as exc:
            raise translate_error(exc, endpoint, self.proxy_for(endpoint)) from exc
        count = data.get("count") if isinstance(data, dict) else None
        if not isinstance(count, int):
            tokens = data.get("tokens") if isinstance(data, dict) else None
            if not isinstance(tokens, list):
                raise BadResponseError("/tokenize answer has no token count", endpoint=endpoint)
            count = len(tokens)
        return count

    async def offers_chat_batch(self, endpoint: Endpoint, timeout: float = 10.0) -> bool:
        """Whether the endpoint serves ``/v1/chat/completions/batch``.

        Asked with an empty body, which a server that has the route refuses as invalid (400 or
        422) without generating anything, and one that lacks it answers 404 or 405.
        """
        try:
            response = await self._http(endpoint).post(
                endpoint.base_url + "/chat/completions/batch", json={}, timeout=timeout)
        except (httpx2.HTTPError, OSError):
            return False
        return response.status_code not in (404, 405) and response.status_code < 500

    async def health(self, endpoint: Endpoint, timeout: float = 5.0) -> bool:
        """Whether ``/health`` answers 200 within ``timeout`` seconds."""
        return await self.health_status(endpoint, timeout) == 200

    async def health_status(self, endpoint: Endpoint, timeout: float = 5.0) -> int | None:
        """The status of ``GET /health``, or ``None`` when no answer came in time."""
        return await self._status(endpoint, endpoint.url + "/health", timeout)

    async def models_status(self, endpoint: Endpoint, timeout: float = 5.0) -> int | None:
        """The status of ``GET /v1/models``, or ``None`` when no answer came in time."""
        return await self._status(endpoint, endpoint.base_url + "/models", timeout)

    async def _status(self, endpoint: Endpoint, url: str, timeout: float) -> int | None:
        try:
            response = await self._http(endpoint).get(url, timeout=timeout)
        except (httpx2.HTTPError, OSError):
            return None
        return response.status_code

    async def load_gauges(self, endpoint: Endpoint, timeout: float = 5.0) -> ServerGauges | None:
        """What ``/metrics`` says of the server's load and past speed (see
        :class:`ServerGauges`), or ``None`` when the server publishes no vLLM gauges."""
        try:
            response = await self._http(endpoint).get(endpoint.url + "/metrics", timeout=timeout)
        except (httpx2.HTTPError, OSError):
            return None
        if response.status_code != 200:
            return None
        return parse_load_gauges(response.text)

    async def aclose(self) -> None:
        """Close every connection pool (shielded: a cancellation cannot interrupt it)."""
        with anyio.CancelScope(shield=True):
            clients, self._https, self._clients = list(self._https.values()), {}, {}
            for http in clients:
                await http.aclose()


@attrs.frozen
class ServerGauges:
    """A vLLM server's ``/metrics``, as far as dispatch uses it.

    vLLM counts each prompt of a list-prompt request as a request of its own, so these count
    sequences: while any wait, the running ones are the server's capacity.

    Attributes
    ----------
    running, waiting:
        ``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` (summed over engines).
    run_seconds, runs:
        The sum and count of ``vllm:request_inference_time_seconds``: how long the sequences
        the server has finished spent running (0 and 0 on a server that has served nothing, or
        does not publish it).
    tokens, steps:
        ``vllm:generation_tokens_total`` and the count of ``vllm:iteration_tokens_total``: the
        tokens the server has generated and the engine steps it took (0 and 0 when it does
        not publish them). A running sequence gains one token a step.
    queue_seconds:
        The sum of ``vllm:request_queue_time_seconds``: how long the sequences the server has
        finished waited for a slot (0 when not published).
    counts_steps:
        Whether the server publishes its generated tokens and engine steps at all (``tokens``
        and ``steps`` of 0 then mean that it has not stepped yet).
    step_tokens:
        The sum of ``vllm:iteration_tokens_total``: every token the engine steps processed,
        prompt tokens included (0 when not published).
    """

    running: int
    waiting: int
    run_seconds: float = 0.0
    runs: int = 0
    tokens: float = 0.0
    steps: float = 0.0
    queue_seconds: float = 0.0
    counts_steps: bool = False
    step_tokens: float = 0.0

    @property
    def decoding(self) -> bool:
        """Whether the server's steps mostly generated tokens (or it does not say), so that
        :attr:`past_running` counts the sequences a step ran. Steps that read prompts
        generate next to nothing: a server that served long prompts with short answers
        (525-token prompts, one token each) generated a token a step whatever its batch."""
        return self.step_tokens <= 0 or self.tokens >= self.step_tokens / 2

    @property
    def past_queue(self) -> float | None:
        """Seconds a sequence waited for a slot on average, over everything the server has
        served."""
        return self.queue_seconds / self.runs if self.runs > 0 else None

    @property
    def past_running(self) -> float | None:
        """Sequences the server ran at once on average while it was stepping, over everything
        it has served (tokens a step)."""
        return self.tokens / self.steps if self.steps > 0 and self.tokens > 0 else None

    @property
    def past_wave(self) -> float | None:
        """Seconds a sequence ran on average, over everything the server has served."""
        return self.run_seconds / self.runs if self.runs > 0 and self.run_seconds > 0 else None


_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting",
           "vllm:request_inference_time_seconds_sum", "vllm:request_inference_time_seconds_count",
           "vllm:generation_tokens_total", "vllm:iteration_tokens_total_count",
           "vllm:request_queue_time_seconds_sum", "vllm:iteration_tokens_total_sum")


def parse_load_gauges(text: str) -> ServerGauges | None:
    """The :class:`ServerGauges` of a Prometheus text page (samples summed over labels), or
    ``None`` if the running or waiting gauge is missing."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(_GAUGES):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name not in _GAUGES:
            continue
        fields = (line.rsplit("}", 1)[-1] if "{" in line else line[len(name):]).split()
        try:
            found[name] = found.get(name, 0.0) + float(fields[0])
        except (IndexError, ValueError):
            continue
    running, waiting, run_seconds, runs, tokens, steps, queued, step_tokens = (
        found.get(name) for name in _GAUGES)
    if running is None or waiting is None:
        return None
    return ServerGauges(int(running), int(waiting), run_seconds or 0.0, int(runs or 0),
                        tokens or 0.0, steps or 0.0, queued or 0.0,
                        tokens is not None and steps is not None, step_tokens or 0.0)
