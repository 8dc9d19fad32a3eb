"""Every error aurora_swarm raises or records.

The tree:

.. code-block:: text

    SwarmError
    ├── ConfigurationError (a ValueError)     bad arguments or settings
    │   ├── InputFileError                     a file that cannot be used (file, line)
    │   │   ├── HostfileError                  a hostfile
    │   │   └── JobFileError                   a prompts or results file
    │   └── PromptError                        a prompt that is malformed or cannot fit
    ├── PoolClosedError (a RuntimeError)      the pool was used after ``aclose()``
    ├── OverloadError                          a bounded queue refused new work
    ├── BatchError (an ExceptionGroup)         a strict call's per-prompt failures
    └── RequestError                           one request to one endpoint went wrong
        ├── ConnectError                       could not connect / connection dropped
        ├── RequestTimeout                     no answer in time
        ├── HTTPStatusError                    the server answered with a non-2xx status
        ├── BadResponseError                   the answer was not what the protocol promises
        └── EndpointUnavailable                no healthy endpoint was left to try

A failed prompt in a batch job is *data*: its :class:`~aurora_swarm.Response` has
``success=False`` and carries one of the :class:`~aurora_swarm.RequestError` subclasses in
``exception``.
Programming errors (bad arguments, a closed pool, an unknown agent index) are raised at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if sys.version_info >= (3, 11):  # pragma: no cover - version switch
    _ExceptionGroup = ExceptionGroup  # noqa: F821
else:  # pragma: no cover - version switch
    from exceptiongroup import ExceptionGroup as _ExceptionGroup  # type: ignore[import-not-found]

if TYPE_CHECKING:
    from ._endpoint import Endpoint

__all__ = [
    "BadResponseError",
    "BatchError",
    "ConfigurationError",
    "ConnectError",
    "EndpointUnavailable",
    "HTTPStatusError",
    "HostfileError",
    "InputFileError",
    "JobFileError",
    "OverloadError",
    "PoolClosedError",
    "PromptError",
    "RequestError",
    "RequestTimeout",
    "SwarmError",
]


class SwarmError(Exception):
    """Root of every error raised or recorded by aurora_swarm."""


class ConfigurationError(SwarmError, ValueError):
    """An argument or setting is wrong; raised at once, before any request is sent."""


class InputFileError(ConfigurationError):
    """A file the user gave cannot be used; names the file and, where it applies, the line.

    The message reads ``path:line: problem`` (or ``path: problem``).

    Attributes
    ----------
    path:
        The file as given.
    line:
        The 1-based line number, or ``None`` when the whole file is at fault.
    problem:
        What is wrong.
    """

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}")


class HostfileError(InputFileError):
    """A hostfile could not be read: missing, empty, or a line that names no endpoint."""


class JobFileError(InputFileError):
    """A prompts or results file (or an item passed from Python) cannot be used.

    For an item passed from Python, ``path`` is ``items[i]`` and ``line`` is ``None``.
    """


class PromptError(ConfigurationError):
    """A prompt is malformed or cannot fit the model's context; names the prompt index."""

    def __init__(self, index: int | None, problem: str) -> None:
        self.index = index
        self.problem = problem
        super().__init__(f"prompt {index}: {problem}" if index is not None else problem)


class PoolClosedError(SwarmError, RuntimeError):
    """The pool was used after it was closed."""


class OverloadError(SwarmError):
    """A bounded queue is full and refused new work; retry later or raise the bound."""


class RequestError(SwarmError):
    """One request to one endpoint failed.

    Attributes
    ----------
    endpoint:
        The endpoint the request went to, when known.
    retryable:
        Whether the same request may succeed if tried again (timeouts, connection errors,
        408/409/429/5xx).
    """

    retryable: bool = False

    def __init__(self, message: str, *, endpoint: Endpoint | None = None) -> None:
        self.endpoint = endpoint
        prefix = f"{endpoint}: " if endpoint is not None else ""
        super().__init__(prefix + message)

    @property
    def cause(self) -> str:
        """A short name for the kind of failure, used to count failures by cause."""
        return type(self).__name__


class ConnectError(RequestError):
    """The connection could not be made, or it dropped before an answer came."""

    retryable = True


class RequestTimeout(RequestError):
    """No answer came within the request's timeout."""

    retryable = True


_RETRYABLE_STATUS = frozenset({408, 409, 429})


class HTTPStatusError(RequestError):
    """The server answered with an error status.

    Attributes
    ----------
    status_code:
        The HTTP status.
    retry_after:
        Seconds the server asked us to wait (``Retry-After``), when it said so.
    body:
        The start of the response body, for diagnosis.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        endpoint: Endpoint | None = None,
        retry_after: float | None = None,
        body: str = "",
    ) -> None:
        self.status_code = status_code
        self.retry_after = retry_after
        self.body = body
        super().__init__(f"HTTP {status_code}: {message}", endpoint=endpoint)
        self.retryable = status_code in _RETRYABLE_STATUS or status_code >= 500

    @property
    def cause(self) -> str:
        """``"HTTP <status>"``, e.g. ``"HTTP 503"``."""
        return f"HTTP {self.status_code}"


class BadResponseError(RequestError):
    """The server's answer broke the protocol (bad JSON, missing or duplicated choice index)."""

    retryable = True


class EndpointUnavailable(RequestError):
    """Every endpoint that could take the prompt is benched or has failed it."""


class BatchError(_ExceptionGroup[Exception], SwarmError):
    """Raised by ``strict=True`` calls: one exception group of every per-prompt failure.

    Each member is a :class:`RequestError` (or :class:`PromptError`) whose ``prompt_index``
    attribute names the prompt it belongs to. Create it as
    ``BatchError(message, [exc, ...])``. It is a :class:`SwarmError` too, so
    ``except SwarmError`` catches a strict call's failures, and ``except*`` matches its members.
    """

    def derive(self, excs: Sequence[Exception]) -> BatchError:  # type: ignore[override]
        """A group of the same type over ``excs`` (used by ``split`` and ``subgroup``)."""
        return BatchError(self.message, excs)
