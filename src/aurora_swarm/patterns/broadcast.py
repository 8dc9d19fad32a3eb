"""Broadcast: one prompt answered many times, and optionally merged into one answer."""

from __future__ import annotations

from .._exceptions import ConfigurationError
from .._response import Response
from ._base import (
    DEFAULT_SEPARATOR,
    Pool,
    agent_pool,
    check_max_tokens,
    require_placeholder,
)
from .scatter_gather import scatter_gather
from .tree_reduce import reduce_levels

__all__ = ["broadcast", "broadcast_and_reduce"]


def _copies(pool: Pool, copies: int | None) -> int:
    if copies is None:
        return pool.size
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise ConfigurationError(f"copies must be an int >= 0 or None, got {copies!r}")
    return copies


async def broadcast(
    pool: Pool, prompt: str, max_tokens: int | None = None, *, copies: int | None = None
) -> list[Response]:
    """Send the same prompt ``copies`` times (default: once per agent), batched.

    The copies go out in one batched call, so they take few requests; each answer's
    ``agent_index`` tells which agent gave it. (With a batching pool, the copies are spread
    over the agents by the pool's chunking, not pinned one per agent; for exactly one chat
    request per agent use
    :meth:`VLLMPool.broadcast_prompt <aurora_swarm.VLLMPool.broadcast_prompt>`.)
    Useful with a sampling temperature above zero, for votes and self-consistency.

    Parameters
    ----------
    pool:
        Any :class:`~aurora_swarm.patterns.Pool`.
    prompt:
        The prompt.
    max_tokens:
        Tokens per answer (``None``: the pool decides).
    copies:
        How many answers to ask for; ``None`` is ``pool.size``.

    Returns
    -------
    list of Response
        ``copies`` answers.

    Examples
    --------
    On :class:`~aurora_swarm.testing.FakeFleet`, whose agents answer ``"ECHO: "`` and the
    prompt (so every vote agrees):

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.patterns import broadcast, majority_vote
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo():
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         return await broadcast(pool, "Is 221 prime? Answer yes or no.", copies=5)
    >>> votes = anyio.run(demo)
    >>> len(votes), majority_vote(votes).winner
    (5, 'echo: is 221 prime? answer yes or no.')
    """
    if not isinstance(prompt, str):
        raise ConfigurationError(f"prompt must be a str, got {type(prompt).__name__}")
    return await scatter_gather(pool, [prompt] * _copies(pool, copies), max_tokens)


async def broadcast_and_reduce(
    pool: Pool,
    prompt: str,
    reduce_prompt: str,
    max_tokens: int | None = None,
    *,
    copies: int | None = None,
    reduce_max_tokens: int | None = None,
    reducer: Pool | None = None,
    separator: str = DEFAULT_SEPARATOR,
    reducer_agent_index: int | None = None,
) -> Response:
    """:func:`broadcast`, then ONE merge of every usable answer with ``reduce_prompt``.

    ``reduce_prompt`` gets ``{responses}`` (the usable answers joined by ``separator``) and
    ``{level}`` (``1``). The merge runs even when only one answer is usable. Failed and empty
    answers are left out; when none is usable, the result is a failed response carrying a
    :class:`~aurora_swarm.patterns.NoAnswerError`. For many answers, prefer
    :func:`~aurora_swarm.patterns.tree_reduce` (bounded supervisor prompts); for the
    intermediate answers, :func:`~aurora_swarm.patterns.tree_reduce_tree` with
    ``fanin=copies``.

    Parameters
    ----------
    pool:
        Any :class:`~aurora_swarm.patterns.Pool`.
    prompt:
        The prompt every copy answers.
    reduce_prompt:
        The merge prompt; needs ``{responses}``.
    max_tokens:
        Tokens per broadcast answer.
    copies:
        How many answers to merge; ``None`` is ``pool.size``.
    reduce_max_tokens:
        Tokens for the merged answer; defaults to ``max_tokens``.
    reducer:
        The pool that merges (default: ``pool``).
    reducer_agent_index:
        The agent of ``pool`` that merges (the earlier spelling of
        ``reducer=pool.select([index])``).
    separator:
        What joins the answers in ``{responses}``.

    Returns
    -------
    ~aurora_swarm.Response
        The merged answer.

    Examples
    --------
    Two agents, so two copies to merge, on :class:`~aurora_swarm.testing.FakeFleet` (each
    agent answers ``"ECHO: "`` and the prompt):

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.patterns import broadcast_and_reduce
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo():
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         return await broadcast_and_reduce(
    ...             pool, "Name the compound.", "Pick the best name: {responses}", separator=" | ")
    >>> print(anyio.run(demo).text)
    ECHO: Pick the best name: ECHO: Name the compound. | ECHO: Name the compound.
    """
    require_placeholder(reduce_prompt, "responses", "reduce_prompt")
    check_max_tokens(reduce_max_tokens, "reduce_max_tokens")
    if reducer_agent_index is not None:
        if reducer is not None:
            raise ConfigurationError("give reducer= or reducer_agent_index=, not both")
        reducer = agent_pool(pool, reducer_agent_index, "reducer_agent_index")
    answers = await broadcast(pool, prompt, max_tokens, copies=copies)
    reducer = reducer if reducer is not None else pool
    tree = await reduce_levels(
        reducer, answers, [prompt] * len(answers), reduce_prompt, max(2, len(answers)),
        max_tokens=reduce_max_tokens if reduce_max_tokens is not None else max_tokens,
        separator=separator, min_levels=1, what="broadcast_and_reduce",
    )
    return tree.root
