"""Blackboard: agents in roles take turns writing to named sections of a shared board."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .._exceptions import ConfigurationError
from .._response import Response
from ._base import (
    DEFAULT_SEPARATOR,
    Dropped,
    Pool,
    TaggedPool,
    check_max_tokens,
    drop_reason,
    fill_template,
    usable,
)
from .broadcast import broadcast

__all__ = [
    "Blackboard",
    "BoardSnapshot",
    "BoardState",
    "ConvergenceFn",
    "PromptFn",
    "render_board",
]

BoardState = dict[str, list[str]]
"""The board, as each section's entries, oldest first."""
PromptFn = Callable[[str, BoardState], str]
"""``prompt_fn(role, board) -> prompt`` for the agents of ``role``."""
ConvergenceFn = Callable[[BoardState], bool]
"""``convergence_fn(board) -> bool``, true to stop the rounds."""

_RESERVED = frozenset({"board", "round"})


@attrs.frozen
class BoardSnapshot:
    """The board after a round, with the answers that round produced.

    Attributes
    ----------
    round:
        Rounds completed when it was taken.
    sections:
        Each section's entries, oldest first.
    responses:
        For each role that ran in that round, its answers (failed ones included).
    dropped:
        The failed or empty answers of that round (``level`` is the round, ``index`` the
        position among its role's answers).
    """

    round: int
    sections: Mapping[str, tuple[str, ...]]
    responses: Mapping[str, tuple[Response, ...]] = attrs.field(factory=dict)
    dropped: tuple[Dropped, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A plain ``{"round": n, "board": {section: [entries]}}`` (JSON-serializable)."""
        return {"round": self.round, "board": {k: list(v) for k, v in self.sections.items()}}

    def __getitem__(self, key: str) -> Any:
        """``snapshot["round"]`` and ``snapshot["board"]``, as in :meth:`to_dict`."""
        return self.to_dict()[key]


def render_board(board: Mapping[str, Sequence[str]], separator: str = DEFAULT_SEPARATOR) -> str:
    """The board as text: each section's name, then its entries joined by ``separator``.

    Examples
    --------
    >>> from aurora_swarm.patterns import render_board
    >>> print(render_board({"ideas": ["a", "b"], "critiques": []}, separator=" | "))
    ideas:
    a | b
    <BLANKLINE>
    critiques:
    (empty)
    """
    return "\n\n".join(
        f"{name}:\n{separator.join(entries) if entries else '(empty)'}"
        for name, entries in board.items()
    )


class Blackboard:
    """A shared board of named sections that role-tagged agents write to, round by round.

    In each round, the sections' roles run in order; each later role already sees what earlier
    roles wrote that round. A role's agents all get the role's prompt (one batched call, one
    answer per agent of the role) and their usable answers are appended to the role's section;
    failed and empty answers are recorded in the round's :class:`BoardSnapshot` instead. After
    each round ``convergence_fn(board)`` may stop the run.

    Parameters
    ----------
    sections:
        The section names; each is also the role that writes it.
    prompt_fn:
        Either ``prompt_fn(role, board) -> prompt``, or a mapping from role to a template in
        which ``{board}`` (the whole board, see :func:`render_board`), ``{round}`` (1-based)
        and ``{<section>}`` (that section's entries) are filled by plain replacement.
    role_key:
        The endpoint tag that names an agent's role (``role=critic``).
    max_tokens:
        Tokens per answer (``None``: the pool decides).
    keep_last:
        Keep only this many latest entries per section, so prompts stay bounded.

    Examples
    --------
    One agent per role on :class:`~aurora_swarm.testing.FakeFleet` (each agent answers
    ``"ECHO: "`` and the prompt). A hostfile's ``role=...`` column tags the endpoints; here
    they are tagged by hand:

    >>> import anyio
    >>> from aurora_swarm import Endpoint, VLLMPool
    >>> from aurora_swarm.patterns import Blackboard
    >>> from aurora_swarm.testing import FakeFleet
    >>> board = Blackboard(["hypotheses", "critiques"], {
    ...     "hypotheses": "Propose one new hypothesis.",
    ...     "critiques": "Critique: {hypotheses}",
    ... })
    >>> async def demo():
    ...     async with FakeFleet(2) as fleet:
    ...         agents = [Endpoint(e.host, e.port, {"role": role})
    ...                   for e, role in zip(fleet.endpoints, ["hypotheses", "critiques"])]
    ...         async with VLLMPool(agents, model=fleet.model) as pool:
    ...             return await board.run(pool, max_rounds=1)
    >>> final = anyio.run(demo)
    >>> final["critiques"], board.round
    (['ECHO: Critique: ECHO: Propose one new hypothesis.'], 1)
    """

    def __init__(
        self,
        sections: Sequence[str],
        prompt_fn: Callable[[str, BoardState], str] | Mapping[str, str],
        *,
        role_key: str = "role",
        max_tokens: int | None = None,
        keep_last: int | None = None,
    ) -> None:
        if isinstance(sections, str) or not sections:
            raise ConfigurationError("sections must be a non-empty list of section names")
        if len(set(sections)) != len(sections):
            raise ConfigurationError(f"section names repeat: {list(sections)}")
        if isinstance(prompt_fn, Mapping):
            missing = [s for s in sections if s not in prompt_fn]
            if missing:
                raise ConfigurationError(f"no prompt template for the sections {missing}")
            if _RESERVED & set(sections):
                raise ConfigurationError("with templates, no section may be named board or round")
        check_max_tokens(max_tokens, "max_tokens")
        if keep_last is not None and keep_last < 1:
            raise ConfigurationError(f"keep_last must be >= 1 or None, got {keep_last!r}")
        self._board: BoardState = {section: [] for section in sections}
        self._prompt_fn = prompt_fn
        self._role_key = role_key
        self._max_tokens = max_tokens
        self._keep_last = keep_last
        self._round = 0
        self._history: list[BoardSnapshot] = []

    @property
    def board(self) -> BoardState:
        """The board itself (not a copy), so appending to a section before :meth:`run` seeds it."""
        return self._board

    @property
    def round(self) -> int:
        """Rounds completed."""
        return self._round

    @property
    def history(self) -> tuple[BoardSnapshot, ...]:
        """One :class:`BoardSnapshot` per completed round, oldest first."""
        return tuple(self._history)

    def snapshot(self) -> BoardSnapshot:
        """The board as it is now (with the answers of the last round, if any)."""
        if self._history and self._history[-1].round == self._round:
            return self._history[-1]
        return BoardSnapshot(self._round, {k: tuple(v) for k, v in self._board.items()})

    def prompt_for(self, role: str) -> str:
        """The prompt the agents of ``role`` get now."""
        if not isinstance(self._prompt_fn, Mapping):
            return self._prompt_fn(role, self._copy())
        values = {name: DEFAULT_SEPARATOR.join(e) for name, e in self._board.items()}
        return fill_template(self._prompt_fn[role], board=render_board(self._board),
                             round=self._round + 1, **values)

    def _role_pools(self, pool: Pool, roles: Mapping[str, Pool] | None) -> dict[str, Pool]:
        if roles is not None:
            unknown = set(roles) - set(self._board)
            if unknown:
                raise ConfigurationError(f"roles {sorted(unknown)} are not sections of the board")
            return {name: roles[name] for name in self._board if name in roles}
        if not isinstance(pool, TaggedPool):
            raise ConfigurationError("this pool has no by_tag(); pass roles={section: pool}")
        found: dict[str, Pool] = {}
        for name in self._board:
            try:
                sub = pool.by_tag(self._role_key, name)
            except ConfigurationError:
                continue  # no agent plays this role (a pool that raises for an empty selection)
            if sub.size:
                found[name] = sub
        if not found:
            raise ConfigurationError(
                f"no endpoint is tagged {self._role_key}=<section> for any of {list(self._board)}")
        return found

    async def run(
        self,
        pool: Pool,
        max_rounds: int = 10,
        convergence_fn: Callable[[BoardState], bool] | None = None,
        *,
        roles: Mapping[str, Pool] | None = None,
    ) -> BoardState:
        """Run rounds until ``max_rounds`` or until ``convergence_fn(board)`` is true.

        Parameters
        ----------
        pool:
            A pool whose endpoints carry role tags (``role_key=<section>``), like
            :class:`~aurora_swarm.VLLMPool`. Sections whose role has no agent are skipped.
        max_rounds:
            Most rounds to run in this call (the board carries over between calls).
        convergence_fn:
            Called with a copy of the board after each round; true stops the run.
        roles:
            Role sub-pools given directly, ``{section: pool}``, instead of by tag.

        Returns
        -------
        BoardState
            The board (the same object as :attr:`board`).
        """
        role_pools = self._role_pools(pool, roles)
        for _ in range(max_rounds):
            responses: dict[str, tuple[Response, ...]] = {}
            dropped: list[Dropped] = []
            for name, sub in role_pools.items():
                answers = await broadcast(sub, self.prompt_for(name), self._max_tokens)
                responses[name] = tuple(answers)
                for index, answer in enumerate(answers):
                    if usable(answer):
                        self._board[name].append(answer.text)
                    else:
                        dropped.append(Dropped(self._round + 1, index, answer,
                                               drop_reason(answer)))
                if self._keep_last is not None:
                    del self._board[name][: -self._keep_last]
            self._round += 1
            self._history.append(BoardSnapshot(
                self._round, {k: tuple(v) for k, v in self._board.items()},
                responses, tuple(dropped)))
            if convergence_fn is not None and convergence_fn(self._copy()):
                break
        return self._board

    def _copy(self) -> BoardState:
        return {name: list(entries) for name, entries in self._board.items()}
