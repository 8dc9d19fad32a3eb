"""Blackboard on the fake fleet: role-tagged sub-pools, rounds, convergence, snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aurora_swarm import ConfigurationError, Endpoint, VLLMPool
from aurora_swarm.patterns import Blackboard, BoardState, render_board
from aurora_swarm.testing import EndpointBehavior, FakeFleet

from .conftest import MODEL, ScriptedPool, fleet_of, open_pool

ROLES = ["ideas", "ideas", "critiques", "judge"]


def tagged(fleet: FakeFleet, roles: list[str]) -> list[Endpoint]:
    return [Endpoint(e.host, e.port, {"role": role})
            for e, role in zip(fleet.endpoints, roles, strict=True)]


@pytest.fixture
async def roles_pool(fleet: FakeFleet) -> AsyncIterator[VLLMPool]:
    async with open_pool(tagged(fleet, ROLES), transport=fleet.transport) as opened:
        yield opened


def prompts(role: str, board: BoardState) -> str:
    return f"{role} round={sum(len(v) for v in board.values())}"


async def test_roles_write_their_sections_round_by_round(roles_pool: VLLMPool) -> None:
    board = Blackboard(["ideas", "critiques", "summary"], prompts)
    state = await board.run(roles_pool, max_rounds=2)
    # ideas has 2 agents, critiques 1; nobody is tagged summary, so it is skipped.
    assert state == {
        "ideas": ["ECHO: ideas round=0", "ECHO: ideas round=0",
                  "ECHO: ideas round=3", "ECHO: ideas round=3"],
        "critiques": ["ECHO: critiques round=2", "ECHO: critiques round=5"],
        "summary": [],
    }
    assert board.round == 2 and len(board.history) == 2
    assert board.history[0].to_dict() == {
        "round": 1,
        "board": {"ideas": state["ideas"][:2], "critiques": state["critiques"][:1],
                  "summary": []},
    }
    assert set(board.history[0].responses) == {"ideas", "critiques"}
    assert board.snapshot() is board.history[-1]


async def test_templates_see_the_board_the_round_and_sections(roles_pool: VLLMPool) -> None:
    templates = {
        "ideas": 'Round {round}. Add an idea as {"idea": ...}.',
        "critiques": "Critique:\n{ideas}",
        "judge": "Judge the board:\n{board}",
    }
    board = Blackboard(["ideas", "critiques", "judge"], templates)
    await board.run(roles_pool, max_rounds=1)
    idea = 'ECHO: Round 1. Add an idea as {"idea": ...}.'
    assert board.board["ideas"] == [idea, idea]
    assert board.board["critiques"] == [f"ECHO: Critique:\n{idea}\n---\n{idea}"]
    expected_board = render_board({"ideas": [idea, idea],
                                   "critiques": board.board["critiques"], "judge": []})
    assert board.board["judge"] == [f"ECHO: Judge the board:\n{expected_board}"]


async def test_convergence_stops_early(roles_pool: VLLMPool) -> None:
    board = Blackboard(["ideas", "critiques"], prompts)
    seen: list[int] = []

    def converged(state: BoardState) -> bool:
        seen.append(len(state["ideas"]))
        return len(state["ideas"]) >= 4

    await board.run(roles_pool, max_rounds=10, convergence_fn=converged)
    assert board.round == 2 and seen == [2, 4]


async def test_keep_last_bounds_each_section(roles_pool: VLLMPool) -> None:
    board = Blackboard(["ideas"], prompts, keep_last=1)
    await board.run(roles_pool, max_rounds=3)
    assert board.board == {"ideas": ["ECHO: ideas round=1"]}


async def test_failed_answers_are_recorded_not_written() -> None:
    behaviors = {2: EndpointBehavior(script=("400",))}  # the critic's first request is refused
    async with fleet_of(4, model=MODEL, behaviors=behaviors) as fleet:
        async with open_pool(tagged(fleet, ROLES), transport=fleet.transport) as pool:
            board = Blackboard(["ideas", "critiques"], prompts)
            state = await board.run(pool, max_rounds=2)
    assert len(state["critiques"]) == 1  # round 1 failed, round 2 answered
    (dropped,) = board.history[0].dropped
    assert (dropped.level, dropped.reason) == (1, "failed")
    assert "400" in (dropped.response.error or "")
    assert board.history[1].dropped == ()


async def test_dead_role_agent_is_covered_by_its_peer() -> None:
    async with fleet_of(4, model=MODEL, behaviors={0: EndpointBehavior(die_after=0)}) as fleet:
        async with open_pool(tagged(fleet, ROLES), transport=fleet.transport) as pool:
            board = Blackboard(["ideas"], prompts)
            state = await board.run(pool, max_rounds=1)
    assert state["ideas"] == ["ECHO: ideas round=0"] * 2


async def test_roles_given_directly_on_any_pool() -> None:
    double = ScriptedPool(size=2)
    board = Blackboard(["a", "b"], {"a": "A {b}", "b": "B {a}"})
    state = await board.run(double, max_rounds=1, roles={"a": double, "b": ScriptedPool(1)})
    assert state == {"a": ["ECHO: A "] * 2, "b": ["ECHO: B ECHO: A \n---\nECHO: A "]}


async def test_zero_rounds_and_empty_board(roles_pool: VLLMPool) -> None:
    board = Blackboard(["ideas"], prompts)
    assert await board.run(roles_pool, max_rounds=0) == {"ideas": []}
    assert board.snapshot().round == 0 and board.history == ()


async def test_configuration_errors(pool: VLLMPool) -> None:
    with pytest.raises(ConfigurationError, match="non-empty"):
        Blackboard([], prompts)
    with pytest.raises(ConfigurationError, match="repeat"):
        Blackboard(["a", "a"], prompts)
    with pytest.raises(ConfigurationError, match="no prompt template"):
        Blackboard(["a", "b"], {"a": "x"})
    with pytest.raises(ConfigurationError, match="board or round"):
        Blackboard(["board"], {"board": "x"})
    with pytest.raises(ConfigurationError, match="keep_last"):
        Blackboard(["a"], prompts, keep_last=0)
    with pytest.raises(ConfigurationError, match="no endpoint is tagged"):
        await Blackboard(["a"], prompts).run(pool)  # untagged endpoints
    with pytest.raises(ConfigurationError, match="by_tag"):
        await Blackboard(["a"], prompts).run(ScriptedPool())
    with pytest.raises(ConfigurationError, match="not sections"):
        await Blackboard(["a"], prompts).run(pool, roles={"zzz": pool})
