"""Taking back and backing up as plain functions: tables of cases and properties, no server."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_swarm._plan import Lane
from aurora_swarm._rebalance import Candidate, back_up, take_back


def lane(**fields: float) -> Lane:
    base = {"origin": 0.0, "done": 0, "queued": 0, "slots": 16, "wave": 0.1}
    base.update(fields)
    return Lane(**base)  # type: ignore[arg-type]


def busy(queued: int, done: int = 0, origin: float = 0.0, slots: int = 16,
         wave: float = 0.1) -> Lane:
    return lane(queued=queued, done=done, origin=origin, slots=slots, wave=wave)


def test_waiting_work_moves_when_spread_it_is_clearly_sooner() -> None:
    # Six fast servers of 16 slots, each holding 32 more prompts (two waves from 0.24 s); a 3x
    # slower server's waiting request of 32, due at 0.70 s where it is. Spread over the six,
    # it is done in one wave more (0.54 s); to any one of them it would take two (0.64 s),
    # too little gain for the margin: only spreading makes it worth moving.
    lanes = {p: busy(64, done=32, origin=0.24) for p in range(1, 7)}
    lanes[0] = busy(64, slots=16, wave=0.3, origin=0.26)
    waiting = [Candidate(stay=0.70, position=0, size=32)]
    assert take_back(waiting, dict(lanes), [1, 2, 3, 4, 5, 6], 0.27, 0.2) == [0]
    assert take_back(waiting, dict(lanes), [1], 0.27, 0.2) == []


def test_alike_servers_move_nothing() -> None:
    # a server a few milliseconds behind its peers: no move saves half a wave
    lanes = {p: busy(64, done=32, origin=0.2) for p in range(4)}
    waiting = [Candidate(stay=0.41, position=0, size=32)]
    assert take_back(waiting, dict(lanes), [1, 2, 3], 0.2, 0.2) == []


def test_no_move_saves_less_than_twice_the_noise() -> None:
    # alike servers of 3 ms waves: one reads 30 ms behind its peers. By the waves, moving its
    # waiting 64 prompts over the three others saves about 25 ms, a fifth of the wait and
    # many waves; but answers have been landing 20 ms off when expected, and a saving under
    # twice that is the noise, not the server
    lanes = {p: busy(256, done=128, origin=0.1, wave=0.003) for p in range(1, 4)}
    lanes[0] = busy(256, done=128, origin=0.13, wave=0.003)
    waiting = [Candidate(stay=0.13 + 8 * 0.003, position=0, size=64)]
    assert take_back(waiting, dict(lanes), [1, 2, 3], 0.1, 0.2) == [0]
    assert take_back(waiting, dict(lanes), [1, 2, 3], 0.1, 0.2, noise=0.005) == [0]
    assert take_back(waiting, dict(lanes), [1, 2, 3], 0.1, 0.2, noise=0.02) == []
    # and a backup likewise
    idle = {p: lane(origin=0.1, wave=0.003) for p in range(1, 4)}
    straggler = [Candidate(stay=0.16, position=0, size=16)]
    assert back_up(straggler, dict(idle), [1, 2, 3], 0.1, 0.25) != []
    assert back_up(straggler, dict(idle), [1, 2, 3], 0.1, 0.25, noise=0.03) == []


def test_moves_count_against_the_lanes_they_load() -> None:
    # two late requests of 16 on a slow server, one idle target of 16 slots: the latest moves
    # first and fills the target's next wave; the other would then be done a wave later there,
    # which still beats 1.6 s, so it moves too
    lanes = {0: busy(96, wave=0.8), 1: lane(origin=0.1)}
    waiting = [Candidate(stay=1.6, position=0, size=16), Candidate(stay=2.4, position=0,
                                                                   size=16)]
    target = dict(lanes)
    assert take_back(waiting, target, [1], 0.1, 0.2) == [1, 0]
    assert target[1].queued == 32
    # due at 0.3 and 0.25: the first to move fills the wave ending at 0.2, and the other
    # would be done there at 0.3, no sooner than where it is
    tight = dict(lanes)
    assert take_back([Candidate(0.25, 0, 16), Candidate(0.3, 0, 16)], tight, [1], 0.1,
                     0.2) == [1]
    assert tight[1].queued == 16


def test_a_straggler_is_backed_up_into_free_slots_beside_the_helpers_own_work() -> None:
    # 256 slots; the helpers answered their first wave at 0.25 and hold 44 of their second, so
    # 212 slots are free; the slow server's 300 prompts are expected at 0.8 s. Backed up now,
    # they are done with the helpers' own second wave (0.5 s)
    lanes = {p: busy(300, done=256, origin=0.25, slots=256, wave=0.25) for p in range(1, 8)}
    lanes[0] = busy(300, slots=256, wave=0.27)
    chosen = back_up([Candidate(stay=0.8, position=0, size=300)], dict(lanes),
                     list(range(8)), 0.27, 0.25)
    assert len(chosen) == 1
    k, slices = chosen[0]
    assert k == 0 and sum(n for _, n in slices) == 300
    assert all(p != 0 for p, _ in slices)  # never onto its own server
    assert max(n for _, n in slices) - min(n for _, n in slices) <= 1  # alike helpers alike


def test_a_backup_takes_a_whole_wave_even_into_a_wave_under_way() -> None:
    # the helper's wave began at 0.0 and ends at 0.25: by the wave-synchronous lane, a prompt
    # joining it at 0.2 would be done at 0.25; it runs a whole wave, to 0.45, which does not
    # beat a straggler due at 0.4
    lanes = {0: busy(8, slots=256, wave=0.25), 1: busy(8, slots=256, wave=0.25)}
    assert back_up([Candidate(stay=0.4, position=0, size=8)], dict(lanes), [1], 0.2,
                   0.25) == []
    assert back_up([Candidate(stay=0.8, position=0, size=8)], dict(lanes), [1], 0.2,
                   0.25) == [(0, [(1, 8)])]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 64), st.floats(0.01, 1.0), st.integers(0, 200)),
             min_size=1, max_size=8),
    st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(0, 7), st.integers(1, 100)),
             max_size=6),
)
def test_choices_never_use_the_candidates_own_endpoint_and_move_every_prompt(
    servers: list[tuple[int, float, int]], moves: list[tuple[float, int, int]]
) -> None:
    lanes = {p: lane(slots=s, wave=w, queued=q) for p, (s, w, q) in enumerate(servers)}
    candidates = [Candidate(stay, position % len(servers), size) for stay, position, size in moves]
    everyone = list(lanes)
    before = {p: ln.queued for p, ln in lanes.items()}
    after = dict(lanes)
    backed = back_up(candidates, after, everyone, 0.0, 0.25)
    for k, slices in backed:
        assert sum(n for _, n in slices) == candidates[k].size
        assert all(p != candidates[k].position and n > 0 for p, n in slices)
    added = sum(after[p].queued - before[p] for p in lanes)
    assert added == sum(candidates[k].size for k, _ in backed)
    taken = take_back(candidates, dict(lanes), everyone, 0.0, 0.2)
    assert len(set(taken)) == len(taken)
    assert all(len(servers) > 1 for _ in taken)  # a lone server has nowhere to move work
