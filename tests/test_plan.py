"""Dispatch decisions and the server model as pure functions: tables of cases and properties."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_swarm._plan import Lane, cut, deal, water_fill, worth_moving
from aurora_swarm._server_model import ASSUMED_SLOTS, FleetGuess, ServerModel


def lane(**fields: float) -> Lane:
    base = {"origin": 0.0, "done": 0, "queued": 0, "slots": 256, "wave": 1.0}
    base.update(fields)
    return Lane(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("lanes", "count", "expected"),
    [
        # alike servers: the equal split, whatever the count
        ([lane()] * 4, 192, [48, 48, 48, 48]),
        ([lane()] * 8, 2400, [300] * 8),
        ([lane(slots=16)] * 4, 7, [2, 2, 2, 1]),
        # slots weigh: a server with twice the slots takes twice the share
        ([lane(slots=32), lane(slots=16)], 96, [64, 32]),
        # a server 8x slower takes nothing when the others finish in fewer waves
        ([lane(slots=16)] * 7 + [lane(slots=16, wave=8.0)], 64, [10, 9, 9, 9, 9, 9, 9, 0]),
        # ... and its fair part of a long call (3 of its waves fit in the fast ones' 15)
        ([lane(slots=32)] * 6 + [lane(slots=32, wave=4.0)], 2800,
         [451, 451, 451, 451, 450, 450, 96]),
        # a server holding 40 prompts on 16 slots (3 waves) takes none of a small call
        ([lane(slots=16, queued=40)] + [lane(slots=16)] * 3, 50, [0, 17, 17, 16]),
        # ... but fills the free places of its third wave first when that is as soon
        ([lane(slots=16, queued=40)], 8, [8]),
        # a capped lane takes no more than its cap, however fast it looks
        ([lane(slots=16, cap=16)] + [lane(slots=16)] * 3, 256, [16, 80, 80, 80]),
        ([lane(slots=16, cap=0)] + [lane(slots=16)] * 3, 48, [0, 16, 16, 16]),
        # ... unless the caps together cannot take the call
        ([lane(slots=16, cap=4), lane(slots=16, cap=4)], 64, [32, 32]),
    ],
)
def test_water_fill(lanes: list[Lane], count: int, expected: list[int]) -> None:
    assert water_fill(lanes, count, 0.0) == expected


def test_an_answer_ends_the_wave_it_ran_in() -> None:
    # 301 prompts on 256 slots, one request of 38 answered at 0: the other 218 of that wave
    # ran beside it, so the last 45 take one more wave, not two. Counted as two, a request
    # waiting in every server's second wave looked a wave late wherever the first answer
    # read was a small one, and eight callers moved work back and forth (spread 262-519).
    server = ServerModel()
    server.learn_slots(256, "option")
    first = server.send(38, 0.0)
    server.send(263, 0.0)
    server.answered(first, 1.0)
    assert server.finish_of(301, 1.0, 1.0) == pytest.approx(2.0)
    assert lane(done=38, queued=301, origin=1.0).finish(0, 1.0) == pytest.approx(2.0)
    assert lane(done=38, queued=301, origin=1.0).finish(300, 1.0) == pytest.approx(3.0)


def test_water_fill_counts_time_already_spent() -> None:
    # answered up to place 16 at t=0.5 with one wave left for places 17..32: busy till 1.5
    busy = lane(origin=0.5, done=16, queued=32, slots=16)
    assert busy.finish(0, 0.6) == pytest.approx(1.5)
    assert water_fill([busy, lane(origin=0.6, slots=16)], 16, 0.6) == [0, 16]


@given(
    st.lists(st.tuples(st.integers(1, 512), st.floats(0.05, 10.0), st.integers(0, 2000),
                       st.floats(0.0, 1.0), st.floats(0.0, 2.0)),
             min_size=1, max_size=12),
    st.integers(0, 20_000),
)
@settings(max_examples=300, deadline=None)
def test_water_fill_shares_everything_and_no_share_finishes_late(
    servers: list[tuple[int, float, int, float, float]], count: int
) -> None:
    # Each server holds ``queued`` prompts, answered up to a fraction of them some time ago
    # (up to two waves: its next answer may be overdue): a server that answered part of a
    # wave is planned from the next one.
    lanes = [lane(slots=s, wave=w, queued=q, done=int(q * d), origin=-a * w)
             for s, w, q, d, a in servers]
    shares = water_fill(lanes, count, 0.0)
    assert sum(shares) == count and min(shares) >= 0
    if count:
        finish = max(ln.finish(n, 0.0) for ln, n in zip(lanes, shares, strict=True) if n)
        # within a quarter of the shortest wave of the best possible finish (the last wave
        # is shared evenly among the lanes that finish it within that)
        tolerance = 0.25 * min(s[1] for s in servers) + 1e-9
        assert finish <= _best_finish(lanes, count) + tolerance


def _best_finish(lanes: list[Lane], count: int) -> float:
    """The earliest time (from 0) by which the lanes can finish ``count`` more prompts, by brute
    force over every wave boundary; new prompts take places after what a lane holds and after
    the waves it has finished."""
    times = sorted({max(0.0, ln.origin + k * ln.wave) for ln in lanes
                    for k in range(1, (ln.queued + count) // ln.slots + 3)})
    for t in times:
        room = sum(max(0, (-(-ln.done // ln.slots) + math.floor((t - ln.origin) / ln.wave + 1e-9))
                       * ln.slots - max(ln.queued, -(-ln.done // ln.slots) * ln.slots))
                   for ln in lanes)
        if room >= count:
            return t
    raise AssertionError("no finish found")


def test_a_wave_over_takes_no_more_prompts() -> None:
    # 3 of 8 prompts answered at 0 on 256 slots: the wave they ran in is over, so more prompts
    # take the next one (counted into the places left in the first, 248 more looked free at
    # once, and a plan of one prompt gave -19 to one server and 4 to another)
    done_early = lane(done=3, queued=8, origin=0.0)
    assert done_early.next_place() == 256
    assert done_early.finish(1, 0.0) == pytest.approx(1.0)
    assert water_fill([done_early, lane(done=2, queued=31, origin=0.01)], 1, 0.02) == [1, 0]
    assert water_fill([done_early] * 7, 100, 0.0) == [15, 15, 14, 14, 14, 14, 14]


def test_a_wave_overdue_is_due_now_and_shares_only_the_call() -> None:
    # a server whose wave should have ended a moment ago (not yet answered) frees 144 places
    # now; a call of 55 takes 55 of them, not all 144
    overdue = lane(queued=112, origin=-1.5)
    assert water_fill([lane()] * 3 + [overdue], 55, 0.0) == [0, 0, 0, 55]


@given(st.integers(1, 64), st.integers(1, 2000))
@settings(max_examples=200, deadline=None)
def test_alike_lanes_get_shares_within_one(lanes: int, count: int) -> None:
    shares = water_fill([lane(slots=16)] * lanes, count, 0.0)
    assert max(shares) - min(shares) <= 1


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        (8, [8]),
        (64, [32, 32]),
        (300, [75, 75, 75, 75]),
        (101, [34, 34, 33]),  # no piece below smallest
        (4096, [1024] * 4),
        (10_000, [1000] * 10),  # never above largest
    ],
)
def test_cut(share: int, expected: list[int]) -> None:
    pieces = cut(share, pieces=4, smallest=32, largest=1024)
    assert pieces == expected and sum(pieces) == share


@pytest.mark.parametrize(
    ("count", "shares", "expected"),
    [
        # equal shares: item i to pile i % n, the earlier system's split
        (10, [3, 3, 2, 2], [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]),
        # a full pile drops out of the round; the others go on
        (7, [1, 4, 2], [[0], [1, 3, 5, 6], [2, 4]]),
        # empty shares take nothing; too few items leave the last piles short
        (3, [0, 2, 2], [[], [0, 2], [1]]),
        (0, [2, 2], [[], []]),
    ],
)
def test_deal(count: int, shares: list[int], expected: list[list[int]]) -> None:
    assert deal(list(range(count)), shares) == expected


@settings(max_examples=300, deadline=None)
@given(shares=st.lists(st.integers(0, 40), min_size=1, max_size=12), spare=st.integers(-30, 5))
def test_deal_gives_each_item_once_in_order_and_fills_the_shares(
        shares: list[int], spare: int) -> None:
    count = max(0, sum(shares) + spare)
    piles = deal(list(range(count)), shares)
    dealt = sorted(i for pile in piles for i in pile)
    assert dealt == list(range(min(count, sum(shares))))  # each item once, the first ones
    assert all(len(pile) <= share for pile, share in zip(piles, shares, strict=True))
    assert all(pile == sorted(pile) for pile in piles)
    if count >= sum(shares):
        assert [len(pile) for pile in piles] == shares
    # round-robin: a pile's r-th item comes before any pile's (r+1)-th
    rank = {i: r for pile in piles for r, i in enumerate(pile)}
    assert all(rank[a] <= rank[b] for a, b in itertools.pairwise(dealt))


def test_worth_moving_needs_a_clear_gain() -> None:
    assert worth_moving(10.0, 5.0, 0.0, 0.2)
    assert not worth_moving(10.0, 9.0, 0.0, 0.2)  # saves 10%: noise on alike servers
    assert not worth_moving(0.003, 0.0, 0.0, 0.2)  # a few milliseconds: not worth a request


def test_server_model_learns_waves_over_a_busy_period() -> None:
    server = ServerModel()
    server.learn_slots(16, "option")
    first = server.send(16, 0.0)
    second = server.send(16, 0.0)
    assert (first.ahead, second.ahead) == (0, 16)
    assert server.start_of(second.ahead, 0.0, 0.1) == pytest.approx(0.1)  # waits a wave
    server.answered(first, 0.1)
    assert server.wave == pytest.approx(0.1)
    server.answered(second, 0.2)
    assert server.wave == pytest.approx(0.1)
    assert not server.held


def test_a_request_sent_later_into_free_slots_measures_its_own_time() -> None:
    # Eight callers send into a server of 256 slots over 0.2 s: each request runs as it
    # arrives. Counted from the busy period's start, the last one (sent at 0.2, answered at
    # 0.4) would show a wave of 0.4.
    server = ServerModel()
    server.learn_slots(256, "option")
    requests = [server.send(8, 0.025 * k) for k in range(9)]
    for k, held in enumerate(requests[:-1]):
        server.answered(held, 0.025 * k + 0.2)
    assert server.wave == pytest.approx(0.2)
    # Not answered 0.35 s after the busy period began, but sent only 0.15 s ago: the server
    # is known to take more than 0.15 s a wave, not 0.35 s.
    fresh = ServerModel()
    fresh.learn_slots(256, "option")
    first = fresh.send(8, 0.0)
    fresh.send(8, 0.2)
    fresh.drop(first)  # taken back: the later request is the oldest
    assert fresh.wave_at(0.35, None) == pytest.approx(0.15)
    assert fresh.wave_at(0.35, 0.01) == pytest.approx(0.15)


def test_server_model_take_back_moves_the_queue_up() -> None:
    server = ServerModel()
    server.learn_slots(8, "metrics")
    held = [server.send(8, 0.0) for _ in range(3)]
    server.drop(held[1])
    assert held[2].ahead == 8 and server.queued == 16
    assert server.finish_of(held[2].end, 0.0, 1.0) == pytest.approx(2.0)


def test_an_unanswered_request_bounds_the_wave_from_below() -> None:
    server = ServerModel()
    server.learn_slots(16, "metrics")
    server.send(32, 0.0)  # two waves
    assert server.wave_at(1.0, 0.1) == pytest.approx(0.5)  # not done after 1 s: >= 0.5 a wave
    assert server.wave_at(0.1, 0.1) == pytest.approx(0.1)


def test_a_late_server_is_expected_as_late_again() -> None:
    # 64 slots, two requests of 32 (one wave) then 32 more: planned at 0.2 s a wave, the first
    # wave was due at 0.2. At 0.24 that is within a quarter wave; at 0.3 it is clearly late,
    # and having run 0.3 s unanswered, everything it holds is expected 0.3 s later than planned
    server = ServerModel()
    server.learn_slots(64, "option")
    for _ in range(3):
        server.send(32, 0.0)
    assert not server.late(0.24, 0.2) and server.overdue(0.24, 0.2) == 0.0
    assert server.late(0.3, 0.2)
    assert server.overdue(0.3, 0.2) == pytest.approx(0.3)
    # by the silence bound alone the third request would be about to start: never taken back
    wave = server.wave_at(0.3, 0.2)
    assert wave is not None and server.start_of(64, 0.3, wave) == pytest.approx(0.3)
    assert not ServerModel().late(5.0, 0.2)  # holding nothing, nothing is late


def test_one_late_wave_among_many_is_expected_about_a_wave_late() -> None:
    # 20 waves of 10 ms on 16 slots, the first 10 answered at 0.1: the 11th was due at 0.11.
    # At 0.111 it is within a quarter wave. At 0.135 it is late, and expected as late again
    # as its wave has run (35 ms), not as the whole busy period (0.135 s)
    server = ServerModel()
    server.learn_slots(16, "option")
    held = [server.send(16, 0.0) for _ in range(20)]
    for request in held[:10]:
        server.answered(request, 0.1)
    assert not server.late(0.111, 0.01)
    assert server.late(0.135, 0.01)
    assert server.overdue(0.135, 0.01) == pytest.approx(0.035)


def test_what_is_still_held_queues_after_what_was_answered() -> None:
    # three requests sent together race to the server: the third went out first, but the
    # server answered the other two first (their wave), so the third queues after them
    server = ServerModel()
    server.learn_slots(64, "option")
    first, second, third = (server.send(32, 0.0) for _ in range(3))
    server.went_out(third, 0.0)
    server.went_out(first, 0.0)
    server.went_out(second, 0.0)
    assert third.ahead == 0  # as sent
    server.answered(first, 0.2)
    server.answered(second, 0.2)
    assert (third.ahead, third.end) == (64, 96)
    assert server.due_of(third.end, 0.2) == pytest.approx(0.4)  # one wave after the answers
    assert not server.late(0.26, 0.2)  # kept at place 0, it looked due at 0.2 and late here


def test_an_overtaken_request_measures_the_wave_by_what_was_answered_before_it() -> None:
    # Sent first but staggered, the 16-prompt request reaches the server after another
    # caller's 64: the server runs the 64 first (4 waves of 0.1 s), then the 16 (a fifth).
    server = ServerModel()
    server.learn_slots(16, "metrics")
    first = server.send(16, 0.0)
    second = server.send(64, 0.0)
    server.answered(second, 0.4)
    server.answered(first, 0.5)
    # by the places given when sent, the first read one wave of 0.5 s
    assert server.wave == pytest.approx(0.1)
    assert server.done == 80


def test_a_request_queues_where_it_went_out_not_where_it_was_planned() -> None:
    server = ServerModel()
    server.learn_slots(16, "metrics")
    staggered = server.send(16, 0.0)  # planned first, sent after a pause
    other = server.send(32, 0.0)  # another caller's, sent at once
    server.went_out(other, 0.01)
    server.went_out(staggered, 0.02)
    assert (other.ahead, staggered.ahead) == (0, 32)
    assert server.busy_since == 0.01 and staggered.sent == 0.02
    assert server.oldest() is other


def test_a_few_waves_weigh_little_against_many_measured_before() -> None:
    server = ServerModel()
    server.learn_slots(16, "metrics")
    held = server.send(4096, 0.0)
    server.answered(held, 1.024)  # 256 waves of 4 ms
    assert server.wave == pytest.approx(0.004)
    held = server.send(128, 2.0)  # the next call: its first 8 waves read 37 ms (a late read)
    server.answered(held, 2.296)
    assert server.wave == pytest.approx((256 * 0.004 + 8 * 0.037) / 264)


def test_silence_bounds_the_wave_only_while_other_servers_are_heard() -> None:
    # Two alike servers, first requests of 9 and 8 waves, nothing answered yet: a client too
    # busy to read answers hears silence from both, which says nothing about either.
    servers = [ServerModel(), ServerModel()]
    for server, size in zip(servers, (144, 128), strict=True):
        server.learn_slots(16, "metrics")
        server.send(size, 0.0)
    assert [s.wave_at(0.07, 0.003, heard=-math.inf) for s in servers] == [0.003, 0.003]
    # once answers from elsewhere are read at 0.5 s, a server silent until then is slow
    assert servers[0].wave_at(0.7, 0.003, heard=0.5) == pytest.approx(0.5 / 9)


def test_an_outrun_request_bounds_the_wave_until_an_answer_measures_it() -> None:
    server = ServerModel()
    server.learn_slots(16, "metrics")
    held = server.send(64, 0.0)  # four waves
    server.outrun(held, 0.4)  # a backup won after 0.4 s: at least 0.1 a wave
    assert server.wave == pytest.approx(0.1) and server.wave_bounded
    assert server.room() == 16  # one wave, to measure it by
    assert server.wave_at(1.0, 0.3) == pytest.approx(0.3)  # no faster than the fleet's typical
    held = server.send(10, 1.0)
    assert server.room() == 6
    server.answered(held, 1.8)
    # the answer replaces the bound (averaged with it, the wave would read 0.45)
    assert server.wave == pytest.approx(0.8) and not server.wave_bounded
    assert server.room() is None


def test_outrun_again_while_bounded_is_twice_as_slow() -> None:
    server = ServerModel()
    server.learn_slots(16, "option")
    first = server.send(16, 0.0)
    server.outrun(first, 0.3)  # one wave, outrun at 0.3: at least 0.3
    assert server.wave == pytest.approx(0.3) and server.wave_bounded
    again = server.send(16, 1.0)
    server.outrun(again, 1.3)  # given its one wave, outrun as soon: at least twice the bound
    assert server.wave == pytest.approx(0.6) and server.wave_bounded
    answered = server.send(16, 2.0)
    server.answered(answered, 2.9)  # an answer replaces the bound
    assert server.wave == pytest.approx(0.9) and not server.wave_bounded


def test_a_gauge_reading_counts_once_it_repeats_while_requests_wait() -> None:
    server = ServerModel()
    # a server that has not taken our prompts in yet (a vLLM server short of CPU read 0 and 0
    # while it held 512 of ours) says nothing: read it again
    assert not server.note_reading(running=0, waiting=0, holding=512)
    assert not server.note_reading(running=31, waiting=0, holding=768)
    assert (server.slots, server.unqueued_hold) == (31, 0)
    # nothing waiting: a lower bound only, and no point reading again until we hold more
    assert not server.note_reading(running=40, waiting=0, holding=40)
    assert (server.slots_source, server.unqueued_hold, server.metrics) == ("observed", 40, True)
    assert server.capacity() == ASSUMED_SLOTS and not server.knows_slots()
    # requests wait: the running count is the capacity, once a second reading agrees
    assert not server.note_reading(running=96, waiting=200, holding=300)
    assert server.slots_source == "observed" and not server.knows_slots()
    server.wave = 0.5
    assert server.note_reading(running=96, waiting=150, holding=250)
    assert (server.slots, server.slots_source, server.wave) == (96, "metrics", None)
    # the same reading again changes nothing and keeps the wave measured since
    server.wave = 0.4
    assert not server.note_reading(running=96, waiting=20, holding=120)
    assert (server.capacity(), server.wave) == (96, 0.4)
    assert not server.note_reading(running=0, waiting=5, holding=5)  # nothing running: no news
    # fewer running than once seen at once, twice: not the capacity
    assert not server.note_reading(running=1, waiting=30, holding=40)
    assert not server.note_reading(running=1, waiting=30, holding=40)
    assert server.capacity() == 96


def test_slots_sources() -> None:
    server = ServerModel()
    assert server.capacity() == ASSUMED_SLOTS
    server.learn_slots(40, "observed")
    server.learn_slots(30, "observed")  # an observation only raises
    assert (server.slots, server.slots_source) == (40, "observed")
    server.learn_slots(64, "metrics")
    server.learn_slots(12, "observed")  # a reading beats an observation
    assert (server.slots, server.slots_source) == (64, "metrics")
    assert math.isinf(server.scraped_at * -1)


@pytest.mark.parametrize(("wave", "running", "queue", "slots", "source"), [
    (0.1, 15.3, 0.15, 16, "past"),  # waited 1.5 waves on average: ran about its slots at once
    (0.1, 150.0, 0.015, None, None),  # 300 prompts on 256 slots once: a part-full wave
    (0.1, 8.0, 0.0, None, None),  # never queued: its slots may be many more
    (0.1, None, 0.2, None, None),  # no steps published
])
def test_a_past_of_mostly_queued_sequences_tells_the_slots(
        wave: float, running: float | None, queue: float, slots: int | None,
        source: str | None) -> None:
    server = ServerModel()
    server.note_past(wave, running, queue)
    assert (server.slots, server.slots_source) == (slots, source)
    assert (server.past_wave, server.past_running) == (wave, running)
    if slots is not None:
        assert server.capacity() == slots and not server.knows_slots()


def test_slots_from_the_past_are_a_lower_bound_a_reading_replaces() -> None:
    server = ServerModel()
    server.note_past(0.1, 15.3, 0.2)
    server.learn_slots(20, "observed")  # seen running more at once: raised, still the past
    assert (server.slots, server.slots_source, server.capacity()) == (20, "past", 20)
    server.learn_slots(12, "observed")
    assert server.slots == 20
    # A reading with prompts waiting counts even below the estimate, once it repeats.
    assert not server.note_reading(running=16, waiting=30, holding=60)
    assert server.note_reading(running=16, waiting=30, holding=60)
    assert (server.slots, server.slots_source) == (16, "metrics")
    server.note_past(0.1, 30.0, 0.2)  # the past never overrides a reading
    assert (server.slots, server.slots_source) == (16, "metrics")


def test_a_past_estimate_is_not_replaced_by_a_reading_between_steps() -> None:
    # Estimated at 17 from its past, read at 64 (raised, still the past), then twice at 1
    # between steps with prompts waiting: not its slots.
    server = ServerModel()
    server.note_past(0.1, 16.5, 0.2)
    assert not server.note_reading(running=64, waiting=50, holding=114)
    assert (server.slots, server.slots_source) == (64, "past")
    assert not server.note_reading(running=1, waiting=100, holding=114)
    assert not server.note_reading(running=1, waiting=100, holding=114)
    assert server.capacity() == 64
    server.note_reading(running=64, waiting=50, holding=114)  # the same again: read
    assert (server.slots, server.slots_source) == (64, "metrics")


def test_answers_tell_how_far_they_miss_when_they_were_expected() -> None:
    # 16 slots, 0.1 s waves: four requests of 16 queue back to back. The first answer measures
    # the wave (nothing was expected yet); the second comes on time, the third 50 ms late,
    # the fourth on time again after it
    server = ServerModel()
    server.learn_slots(16, "option")
    held = [server.send(16, 0.0) for _ in range(4)]
    server.answered(held[0], 0.1)
    assert server.miss is None
    server.answered(held[1], 0.2)
    assert server.miss == pytest.approx(0.0)
    server.answered(held[2], 0.35)
    assert server.miss == pytest.approx(0.3 * 0.05)
    late_miss = server.miss
    server.answered(held[3], server.answered_at + server.wave)  # type: ignore[operator]
    assert server.miss is not None and server.miss < late_miss
    # the fleet's noise is the median server's
    others = [ServerModel(miss=m) for m in (0.001, 0.002, 0.04)]
    assert FleetGuess.of(others).noise == pytest.approx(0.002)
    assert FleetGuess.of([ServerModel()]).noise == 0.0
