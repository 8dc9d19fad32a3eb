"""The answer to one prompt: :class:`Response` and its :class:`Usage`."""

from __future__ import annotations

import attrs

from ._endpoint import Endpoint
from ._exceptions import RequestError, SwarmError

__all__ = ["Response", "Usage"]


@attrs.frozen
class Usage:
    """Token counts of one answer (or the sum of many).

    Attributes
    ----------
    prompt_tokens:
        Tokens of the prompt, as the server counted them.
    completion_tokens:
        Tokens generated.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """``prompt_tokens + completion_tokens``."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@attrs.frozen
class Response:
    """The outcome of one prompt: its answer, or why there is none.

    Attributes
    ----------
    success:
        ``True`` when ``text`` holds the model's answer.
    text:
        The answer (empty on failure).
    error:
        A readable reason on failure, else ``None``.
    agent_index:
        Index, in the pool that sent it, of the endpoint that answered (or last tried); ``-1``
        when no endpoint was tried.
    finish_reason:
        ``"stop"``, ``"length"``, ... as the server reported it.
    usage:
        Token counts for this prompt, when the server reported them.
    latency:
        Seconds from sending the request that answered to its answer.
    attempts:
        How many requests carried this prompt (1 when the first one answered).
    endpoint:
        The endpoint that answered (or last tried).
    exception:
        The typed error on failure (a :class:`~aurora_swarm.RequestError` subclass).
    """

    success: bool
    text: str = ""
    error: str | None = None
    agent_index: int = -1
    finish_reason: str | None = None
    usage: Usage | None = None
    latency: float = 0.0
    attempts: int = 1
    endpoint: Endpoint | None = None
    exception: SwarmError | None = attrs.field(default=None, eq=False)

    @classmethod
    def failure(
        cls,
        exc: SwarmError,
        *,
        agent_index: int = -1,
        attempts: int = 1,
        endpoint: Endpoint | None = None,
        latency: float = 0.0,
    ) -> Response:
        """A failed response that carries ``exc``."""
        if endpoint is None and isinstance(exc, RequestError):
            endpoint = exc.endpoint
        return cls(
            success=False,
            error=str(exc),
            agent_index=agent_index,
            attempts=attempts,
            endpoint=endpoint,
            latency=latency,
            exception=exc,
        )
