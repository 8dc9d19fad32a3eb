"""Where an inference server listens: :class:`Endpoint`, and the ways to spell one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from ._exceptions import ConfigurationError

__all__ = ["AgentEndpoint", "Endpoint", "EndpointLike", "Tags"]


class Tags(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping of an endpoint's tags."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._data: dict[str, str] = dict(items or {})
        self._hash = hash(frozenset(self._data.items()))

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Tags({self._data!r})"


def _to_tags(value: Mapping[str, str] | None) -> Tags:
    if isinstance(value, Tags):
        return value
    return Tags({str(k): str(v) for k, v in (value or {}).items()})


def _check_port(_inst: Any, _attr: Any, port: int) -> None:
    if not 0 < port < 65536:
        raise ConfigurationError(f"port {port} is out of range 1..65535")


def _check_host(_inst: Any, _attr: Any, host: str) -> None:
    if not host or any(c.isspace() for c in host):
        raise ConfigurationError(f"host {host!r} is empty or contains white space")


def _to_path(path: str) -> str:
    path = str(path).rstrip("/")
    return path or "/v1"


def _check_path(_inst: Any, _attr: Any, path: str) -> None:
    if not path.startswith("/") or any(c.isspace() or c in "?#" for c in path):
        raise ConfigurationError(
            f"path {path!r} must start with '/' and hold no white space, '?' or '#'")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _check_scheme(_inst: Any, _attr: Any, scheme: str) -> None:
    if scheme not in ("http", "https"):
        raise ConfigurationError(f"scheme {scheme!r} is not 'http' or 'https'")


@attrs.frozen(repr=False)
class Endpoint:
    """One OpenAI-compatible inference server (one vLLM instance, or a hosted gateway).

    Immutable and hashable, so it can key dictionaries and sets. ``tags`` hold the free-form
    ``key=value`` columns of a hostfile line (``role=critic``, ``node=x1000c0s0b0n0``), used by
    :meth:`VLLMPool.by_tag <aurora_swarm.VLLMPool.by_tag>`. The tag ``api_key_env`` names the
    environment variable holding this endpoint's API key (the key itself is never written in a
    hostfile). ``path`` is the OpenAI API's base path: ``/v1`` on vLLM, anything on a gateway
    (``https://host/some/path/v1``).

    Examples
    --------
    >>> Endpoint("gpu01", 8000, {"role": "critic"}).base_url
    'http://gpu01:8000/v1'
    >>> Endpoint.parse("gpu01:8001")
    Endpoint('gpu01', 8001)
    >>> Endpoint.parse("https://inference.example.org/site/llm/v1").base_url
    'https://inference.example.org:443/site/llm/v1'
    """

    host: str = attrs.field(validator=_check_host)
    port: int = attrs.field(converter=int, validator=_check_port)
    tags: Tags = attrs.field(factory=Tags, converter=_to_tags)
    scheme: str = attrs.field(default="http", validator=_check_scheme)
    path: str = attrs.field(default="/v1", converter=_to_path, validator=_check_path)

    @property
    def origin(self) -> str:
        """Scheme, host and port, e.g. ``http://gpu01:8000``.

        .. versionadded:: 0.1.0
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The server's root URL, e.g. ``http://gpu01:8000``: the base URL without its ``/v1``.

        vLLM serves ``/health`` and ``/tokenize`` here.
        """
        root = self.path[:-3] if self.path.endswith("/v1") else self.path
        return self.origin + root

    @property
    def base_url(self) -> str:
        """The OpenAI API base URL, e.g. ``http://gpu01:8000/v1``."""
        return self.origin + self.path

    @classmethod
    def parse(cls, spec: str, tags: Mapping[str, str] | None = None) -> Endpoint:
        """Read ``host:port``, ``[v6addr]:port`` or a URL.

        A URL's path is the API's base path (``http://host:8000/v1``,
        ``https://host/some/path/v1``); without one it is ``/v1``. A URL without a port gets
        its scheme's default (80 for ``http``, 443 for ``https``); ``host:port`` needs one.
        """
        text = spec.strip()
        has_scheme = "://" in text
        if not has_scheme:
            text = "http://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"cannot read endpoint {spec!r}: {exc}") from exc
        if port is None and has_scheme:
            port = _DEFAULT_PORTS.get(parts.scheme)
        if not parts.hostname or port is None:
            raise ConfigurationError(
                f"cannot read endpoint {spec!r}: expected 'host:port' or a URL such as "
                "'http://host:port' or 'https://host/path/v1'"
            )
        if parts.username is not None or parts.password is not None:
            raise ConfigurationError(
                f"endpoint {parts.hostname!r}: credentials in a URL are not accepted; put the "
                "key in an environment variable and name it (hostfile column api_key_env=NAME)")
        if parts.query or parts.fragment:
            raise ConfigurationError(f"cannot read endpoint {spec!r}: a URL with a query or "
                                     "fragment is not an API base URL")
        return cls(parts.hostname, port, tags, parts.scheme, parts.path or "/v1")

    def __str__(self) -> str:
        if self.path != "/v1":
            return f"{self.host}:{self.port}{self.path}"
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        extra = f", {dict(self.tags)!r}" if self.tags else ""
        if self.scheme != "http":
            extra += f", scheme={self.scheme!r}"
        if self.path != "/v1":
            extra += f", path={self.path!r}"
        return f"Endpoint({self.host!r}, {self.port}{extra})"


AgentEndpoint = Endpoint
"""Alias of :class:`Endpoint`, the name earlier code used."""

EndpointLike = Endpoint | str | tuple[str, int]
"""An :class:`Endpoint`, a string :meth:`Endpoint.parse` reads, or a ``(host, port)`` pair."""


def as_endpoint(value: EndpointLike, position: int) -> Endpoint:
    """Turn one item of a user's endpoint list into an :class:`Endpoint`, naming its position."""
    if isinstance(value, Endpoint):
        return value
    if isinstance(value, str):
        try:
            return Endpoint.parse(value)
        except ConfigurationError as exc:
            raise ConfigurationError(f"endpoints[{position}]: {exc}") from exc
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        host, port = value
        if isinstance(port, bool) or not isinstance(port, int):
            raise ConfigurationError(
                f"endpoints[{position}]: port {port!r} of ({host!r}, {port!r}) is not an int")
        try:
            return Endpoint(host, port)
        except ConfigurationError as exc:
            raise ConfigurationError(f"endpoints[{position}]: {exc}") from exc
    raise ConfigurationError(
        f"endpoints[{position}] is a {type(value).__name__}; expected an Endpoint, "
        "'host:port' or a (host, port) pair"
    )
