"""Hierarchical reduce: leaves answer, supervisors merge groups of answers level by level.

Every level is ONE batched call of the pool (``send_all_batched``), leaves and supervisors
alike, so a tree over ``n`` items costs about as many HTTP requests as a few batched calls, not
one request per node. :func:`tree_reduce` returns the root answer; :func:`tree_reduce_tree`
returns the whole :class:`ReduceTree` for inspection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import attrs

from .._exceptions import ConfigurationError
from .._progress import ProgressSetting, check_progress
from .._response import Response
from ._base import (
    DEFAULT_SEPARATOR,
    Dropped,
    NoAnswerError,
    Pool,
    as_text,
    check_max_tokens,
    drop_reason,
    fill_template,
    require_placeholder,
    usable,
)
from ._tracking import labelled, send, tracking
from .scatter_gather import map_gather, scatter_gather

__all__ = ["ReduceTree", "tree_reduce", "tree_reduce_tree"]


@attrs.frozen
class ReduceTree:
    """Every answer of a hierarchical reduce, level by level.

    Level 0 holds the leaves; level ``L >= 1`` the supervisors that merged groups of level
    ``L - 1``'s usable answers. ``levels[L][j]`` is node ``j``'s answer, ``prompts[L][j]`` the
    prompt it got (``""`` for a leaf given as is) and ``groups[L][j]`` the indices at level
    ``L - 1`` it merged (``()`` for leaves).

    Attributes
    ----------
    root:
        The final answer: the one usable answer left at the top; or, when no usable answer was
        left at some level, a failed :class:`~aurora_swarm.Response` whose ``exception`` is a
        :class:`~aurora_swarm.patterns.NoAnswerError` saying so.
    levels:
        The answers of each level, leaves first.
    prompts:
        The prompt of each node, shaped like ``levels``.
    groups:
        For each node, the indices of the level below that it merged.
    dropped:
        The failed or empty answers left out of the merge, with their level and index.
    """

    root: Response
    levels: tuple[tuple[Response, ...], ...]
    prompts: tuple[tuple[str, ...], ...]
    groups: tuple[tuple[tuple[int, ...], ...], ...]
    dropped: tuple[Dropped, ...]

    @property
    def success(self) -> bool:
        """Whether the root is a usable answer."""
        return usable(self.root)

    @property
    def leaves(self) -> tuple[Response, ...]:
        """The answers of level 0."""
        return self.levels[0] if self.levels else ()

    @property
    def depth(self) -> int:
        """Number of supervisor levels above the leaves."""
        return max(0, len(self.levels) - 1)

    def children(self, level: int, index: int) -> tuple[Response, ...]:
        """The answers node ``index`` of ``level`` merged (empty for a leaf)."""
        below = self.levels[level - 1] if level > 0 else ()
        return tuple(below[i] for i in self.groups[level][index])

    def parent(self, level: int, index: int) -> int | None:
        """The index at ``level + 1`` of the node that merged this one, or ``None``."""
        if level + 1 >= len(self.levels):
            return None
        for position, group in enumerate(self.groups[level + 1]):
            if index in group:
                return position
        return None

    def path(self, leaf: int) -> list[tuple[int, int]]:
        """``(level, index)`` of each node from leaf ``leaf`` up to where its answer stops.

        The path reaches the top level when the leaf's answer made it into the root.
        """
        path = [(0, leaf)]
        for level in range(len(self.levels) - 1):
            above = self.parent(level, path[-1][1])
            if above is None:
                break
            path.append((level + 1, above))
        return path


def _split(indices: Sequence[int], fanin: int) -> list[list[int]]:
    """Contiguous groups of at most ``fanin``, as equal in size as possible."""
    count = math.ceil(len(indices) / fanin)
    size, extra = divmod(len(indices), count)
    groups, start = [], 0
    for k in range(count):
        stop = start + size + (1 if k < extra else 0)
        groups.append(list(indices[start:stop]))
        start = stop
    return groups


def _nothing_left(level: int, answers: Sequence[Response], what: str) -> Response:
    if not answers:
        exc = NoAnswerError(f"{what}: nothing to reduce (no leaves)")
        return Response.failure(exc)
    failed = sum(1 for r in answers if not r.success)
    empty = len(answers) - failed
    first = next((r.exception for r in answers if r.exception is not None), None)
    message = f"{what}: no usable answer at level {level} ({failed} failed, {empty} empty)"
    if first is not None:
        message += f"; first error: {first}"
    exc = NoAnswerError(message)
    exc.__cause__ = first
    return Response.failure(exc)


async def reduce_levels(
    pool: Pool,
    leaves: Sequence[Response],
    leaf_prompts: Sequence[str],
    reduce_prompt: str,
    fanin: int,
    *,
    max_tokens: int | None,
    separator: str,
    min_levels: int = 0,
    what: str = "tree_reduce",
    progress: ProgressSetting = False,
) -> ReduceTree:
    """Merge ``leaves`` level by level (internal engine of every reduce pattern)."""
    levels = [tuple(leaves)]
    prompts = [tuple(leaf_prompts)]
    groups: list[tuple[tuple[int, ...], ...]] = [tuple(() for _ in leaves)]
    dropped: list[Dropped] = []
    current: Sequence[Response] = leaves
    level = 0
    while True:
        keep = []
        for index, response in enumerate(current):
            if usable(response):
                keep.append(index)
            else:
                dropped.append(Dropped(level, index, response, drop_reason(response)))
        if not keep:
            root = _nothing_left(level, current, what)
            break
        if len(keep) == 1 and level >= min_levels:
            root = current[keep[0]]
            break
        parts = _split(keep, fanin)
        level += 1
        texts = [
            fill_template(
                reduce_prompt,
                responses=separator.join(current[i].text for i in part),
                level=str(level),
            )
            for part in parts
        ]
        bar = labelled(progress, what, f"level {level}")
        with tracking(pool, bar, None, len(texts), what) as hook:
            current = await send(pool, texts, max_tokens, hook)
        levels.append(tuple(current))
        prompts.append(tuple(texts))
        groups.append(tuple(tuple(part) for part in parts))
    return ReduceTree(root, tuple(levels), tuple(prompts), tuple(groups), tuple(dropped))


def check_fanin(fanin: int) -> None:
    """Raise for a ``fanin`` that is not an int of at least 2."""
    if isinstance(fanin, bool) or not isinstance(fanin, int) or fanin < 2:
        raise ConfigurationError(f"fanin must be an int >= 2, got {fanin!r}")


async def _leaves(
    pool: Pool, prompt: str | None, items: Iterable[object] | None, max_tokens: int | None,
    progress: ProgressSetting = False,
) -> tuple[list[Response], list[str]]:
    bar = labelled(progress, "tree_reduce", "leaves")
    if items is None:
        if not isinstance(prompt, str):
            raise ConfigurationError("tree_reduce needs a prompt, or items, or both")
        prompts = [prompt] * pool.size
        return await scatter_gather(pool, prompts, max_tokens, progress=bar), prompts
    if isinstance(items, str):
        raise ConfigurationError("items must be a list of items, not one string")
    items = list(items)
    if prompt is None:
        leaves = [
            item if isinstance(item, Response) else Response(success=True, text=as_text(item))
            for item in items
        ]
        return leaves, [""] * len(items)
    require_placeholder(prompt, "item", "prompt (with items)")
    prompts = [
        "" if isinstance(item, Response) and not item.success
        else fill_template(prompt, item=item)
        for item in items
    ]
    return await map_gather(pool, items, prompt, max_tokens, progress=bar), prompts


async def tree_reduce_tree(
    pool: Pool,
    prompt: str | None,
    reduce_prompt: str,
    fanin: int = 8,
    items: Iterable[object] | None = None,
    *,
    max_tokens: int | None = None,
    reduce_max_tokens: int | None = None,
    supervisors: Pool | None = None,
    separator: str = DEFAULT_SEPARATOR,
    progress: ProgressSetting = False,
) -> ReduceTree:
    """Run a hierarchical reduce and return every level of it (see :func:`tree_reduce`).

    Takes the same arguments as :func:`tree_reduce`; returns the :class:`ReduceTree` whose
    ``root`` :func:`tree_reduce` returns.

    Examples
    --------
    Three leaves, merged two at a time (on :class:`~aurora_swarm.testing.FakeFleet`, whose
    agents answer ``"ECHO: "`` and the prompt):

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.patterns import tree_reduce_tree
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo():
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         return await tree_reduce_tree(pool, "Rate {item}", "Merge({responses})", fanin=2,
    ...                                       items=["a", "b", "c"], separator=", ")
    >>> tree = anyio.run(demo)
    >>> [len(level) for level in tree.levels], tree.groups[1], tree.dropped
    ([3, 2, 1], ((0, 1), (2,)), ())
    >>> print(tree.root.text)
    ECHO: Merge(ECHO: Merge(ECHO: Rate a, ECHO: Rate b), ECHO: Merge(ECHO: Rate c))
    """
    check_fanin(fanin)
    require_placeholder(reduce_prompt, "responses", "reduce_prompt")
    check_max_tokens(max_tokens, "max_tokens")
    check_max_tokens(reduce_max_tokens, "reduce_max_tokens")
    check_progress(progress)
    leaves, leaf_prompts = await _leaves(pool, prompt, items, max_tokens, progress)
    return await reduce_levels(
        supervisors if supervisors is not None else pool,
        leaves, leaf_prompts, reduce_prompt, fanin,
        max_tokens=reduce_max_tokens if reduce_max_tokens is not None else max_tokens,
        separator=separator, progress=progress,
    )


async def tree_reduce(
    pool: Pool,
    prompt: str | None,
    reduce_prompt: str,
    fanin: int = 8,
    items: Iterable[object] | None = None,
    *,
    max_tokens: int | None = None,
    reduce_max_tokens: int | None = None,
    supervisors: Pool | None = None,
    separator: str = DEFAULT_SEPARATOR,
    progress: ProgressSetting = False,
) -> Response:
    """Leaves answer, then supervisors merge groups of ``fanin`` answers until one remains.

    Leaves: with ``items``, one prompt per item (``prompt`` with its ``{item}`` filled in, as in
    :func:`~aurora_swarm.patterns.map_gather`); without, ``prompt`` is sent ``pool.size`` times.
    With ``items`` and ``prompt=None`` the items *are* the leaves (e.g. the answers of an
    earlier :func:`~aurora_swarm.patterns.map_gather`), no leaf request is sent.

    Then, level by level, the usable answers are cut into contiguous groups of at most
    ``fanin`` (as equal in size as possible, in input order) and each group goes to one
    supervisor as ``reduce_prompt`` with ``{responses}`` (the group's answers joined by
    ``separator``) and ``{level}`` (1 for the first supervisor level) filled in. Each level is
    one batched call. It stops when one usable answer is left: that is the root (a single usable
    leaf is the root as is).

    Failed and empty answers are left out of the merge and recorded in
    :attr:`ReduceTree.dropped`. When no usable answer is left at some level, the root is a
    failed response carrying a :class:`~aurora_swarm.patterns.NoAnswerError` that says so.

    Parameters
    ----------
    pool:
        Any :class:`~aurora_swarm.patterns.Pool`; it answers the leaves (and the supervisors,
        unless ``supervisors`` is given).
    prompt:
        The leaf prompt; with ``items`` it needs an ``{item}`` placeholder. ``None`` takes the
        items as the leaf answers.
    reduce_prompt:
        The supervisors' prompt; needs ``{responses}``, may use ``{level}``.
    fanin:
        Most answers one supervisor merges (at least 2).
    items:
        Work items (strings, responses, or anything ``str()`` renders), or ``None``. A failed
        response item is a failed leaf, without a request.
    max_tokens:
        Tokens per leaf answer (``None``: the pool decides).
    reduce_max_tokens:
        Tokens per supervisor answer; defaults to ``max_tokens``. Supervisors' answers merge
        several answers, so they often need more.
    supervisors:
        A pool for the supervisors (e.g. ``pool.by_tag("role", "supervisor")``).
    separator:
        What joins the answers in ``{responses}``.
    progress:
        ``True`` (or a mapping of ``tqdm`` options) draws one progress bar per level: the
        leaves, then each supervisor level.

    Returns
    -------
    ~aurora_swarm.Response
        The root answer. :func:`tree_reduce_tree` returns the whole tree.

    Raises
    ------
    ~aurora_swarm.ConfigurationError
        For a missing placeholder, ``fanin < 2``, or a bad ``max_tokens``.

    Examples
    --------
    Four items taken as the leaves (``prompt=None``) and merged two at a time, on
    :class:`~aurora_swarm.testing.FakeFleet`, whose agents answer ``"ECHO: "`` and the prompt:

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.patterns import tree_reduce
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo(abstracts):
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         return await tree_reduce(pool, None, "Merge({responses})", fanin=2,
    ...                                  items=abstracts, separator=", ")
    >>> top = anyio.run(demo, ["a", "b", "c", "d"])
    >>> print(top.text if top.success else top.error)
    ECHO: Merge(ECHO: Merge(a, b), ECHO: Merge(c, d))
    """
    tree = await tree_reduce_tree(
        pool, prompt, reduce_prompt, fanin, items, max_tokens=max_tokens,
        reduce_max_tokens=reduce_max_tokens, supervisors=supervisors, separator=separator,
        progress=progress,
    )
    return tree.root
