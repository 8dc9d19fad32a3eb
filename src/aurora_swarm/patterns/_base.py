"""What every pattern builds on: the :class:`Pool` protocol, template filling, answer helpers.

Patterns talk to a pool only through :class:`Pool` (``size`` and ``send_all_batched``), so
they run on a :class:`~aurora_swarm.VLLMPool`, on any of its sub-pools, and on a test double or
a pool of the user's own making. A few patterns need more (:class:`TaggedPool` for role-tagged
sub-pools, :class:`SliceablePool` for partitioned stages) and say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import attrs

from .._exceptions import ConfigurationError, SwarmError
from .._response import Response
from .._templates import as_text, fill_template

__all__ = [
    "DEFAULT_SEPARATOR",
    "Dropped",
    "NoAnswerError",
    "Pool",
    "SliceablePool",
    "TaggedPool",
    "as_text",
    "fill_template",
    "usable",
]

DEFAULT_SEPARATOR = "\n---\n"
"""What joins the answers a supervisor merges, in its ``{responses}`` placeholder."""


@runtime_checkable
class Pool(Protocol):
    """What a pattern needs from a pool: its size, and batched sending in input order.

    :class:`~aurora_swarm.VLLMPool` and its sub-pools are pools; so is any object with these two
    members, e.g. a test double that answers from a dictionary.

    Examples
    --------
    >>> import asyncio
    >>> from aurora_swarm import Response
    >>> class Upper:
    ...     size = 1
    ...     async def send_all_batched(self, prompts, max_tokens=None):
    ...         return [Response(success=True, text=p.upper()) for p in prompts]
    >>> from aurora_swarm.patterns import Pool
    >>> isinstance(Upper(), Pool)
    True
    >>> from aurora_swarm.patterns import map_gather
    >>> [r.text for r in asyncio.run(map_gather(Upper(), ["a", "b"], "say {item}"))]
    ['SAY A', 'SAY B']
    """

    @property
    def size(self) -> int:
        """Number of agents (endpoints)."""
        ...

    async def send_all_batched(
        self, prompts: Sequence[str], max_tokens: int | None = None
    ) -> list[Response]:
        """Answer every prompt; ``out[i]`` answers ``prompts[i]``; failures are data."""
        ...


@runtime_checkable
class TaggedPool(Pool, Protocol):
    """A :class:`Pool` that can name a sub-pool by an endpoint tag (``role=critic``)."""

    def by_tag(self, key: str, value: str | None = None) -> Pool:
        """The endpoints whose tag ``key`` equals ``value``."""
        ...


@runtime_checkable
class SliceablePool(Pool, Protocol):
    """A :class:`Pool` that can hand out a contiguous run of its agents."""

    def slice(self, start: int, stop: int | None = None) -> Pool:
        """Agents ``start`` up to (not including) ``stop``."""
        ...


class NoAnswerError(SwarmError):
    """A pattern was left with no usable answer: every one failed or was empty.

    Carried by the failed :class:`~aurora_swarm.Response` a reduce returns in that case; its
    ``__cause__`` is the first underlying error, when there was one.
    """


@attrs.frozen
class Dropped:
    """An answer a pattern left out, and why.

    Attributes
    ----------
    level:
        Where it was dropped: a tree level (0 for leaves), a pipeline stage or a blackboard
        round, as the pattern documents.
    index:
        Its position within that level.
    response:
        The answer itself.
    reason:
        ``"failed"`` (``success`` is false) or ``"empty"`` (only white space).
    """

    level: int
    index: int
    response: Response
    reason: Literal["failed", "empty"]


def usable(response: Response) -> bool:
    """Whether ``response`` is a successful answer with some text (not only white space).

    Examples
    --------
    >>> from aurora_swarm import Response
    >>> from aurora_swarm.patterns import usable
    >>> usable(Response(success=True, text="42")), usable(Response(success=True, text=" "))
    (True, False)
    """
    return response.success and bool(response.text.strip())


def drop_reason(response: Response) -> Literal["failed", "empty"]:
    """Why :func:`usable` refused ``response``."""
    return "failed" if not response.success else "empty"


def require_placeholder(template: str, name: str, what: str) -> None:
    """Raise :class:`~aurora_swarm.ConfigurationError` if ``template`` lacks ``{name}``."""
    if not isinstance(template, str):
        raise ConfigurationError(f"{what} must be a str, got {type(template).__name__}")
    if "{" + name + "}" not in template:
        raise ConfigurationError(f"{what} has no {{{name}}} placeholder: {template[:80]!r}")


def check_max_tokens(value: int | None, name: str) -> None:
    """Raise at once for a ``max_tokens`` that is neither ``None`` nor a positive int."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int or None, got {value!r}")


def check_prompts(prompts: Sequence[str], what: str = "prompts") -> list[str]:
    """The prompts as a list; raise for one string passed where a list belongs."""
    if isinstance(prompts, str):
        raise ConfigurationError(f"{what} must be a list of strings, not one string")
    return list(prompts)


def agent_pool(pool: object, index: int, what: str) -> Pool:
    """The one-agent sub-pool ``pool.select([index])``, for an earlier ``*_agent_index``."""
    select = getattr(pool, "select", None)
    if select is None:
        raise ConfigurationError(f"{what} needs a pool with select(); pass a pool instead")
    chosen = select([index])
    if not isinstance(chosen, Pool):
        raise ConfigurationError(f"{what}: select() did not return a pool")
    return chosen
