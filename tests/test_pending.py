"""Which unassigned prompts an endpoint takes: dealing, homes, prompts put back."""

from __future__ import annotations

from aurora_swarm._pending import Unassigned


def test_prompts_are_dealt_round_robin_skipping_answered_ones() -> None:
    answered = {1}
    work = Unassigned(["s"] * 10, lambda i: i not in answered)
    piles = work.split([0, 1, 2], [3, 3, 3])
    assert piles == [[("s", [0, 4, 7])], [("s", [2, 5, 8])], [("s", [3, 6, 9])]]
    assert work.count == 0 and not work


def test_a_pile_is_grouped_by_request_shape() -> None:
    # one shape's queue after the other: 0, 2, 4, then 1, 3, dealt into piles of 3 and 2
    work = Unassigned(["a", "b", "a", "b", "a"], lambda i: True)
    assert work.deal([3, 2]) == [[("a", [0, 4]), ("b", [3])], [("a", [2]), ("b", [1])]]


def test_prompts_put_back_go_first_and_drain_empties() -> None:
    work = Unassigned(["s"] * 4, lambda i: True)
    assert work.deal([2]) == [[("s", [0, 1])]]
    work.put_back(1)
    assert work.count == 3
    assert work.deal([1]) == [[("s", [1])]]
    assert sorted(work.drain()) == [2, 3] and work.count == 0 and work.deal([2]) == [[]]


def test_with_homes_an_endpoint_takes_its_own_then_the_largest_queue_s_tail() -> None:
    # prompts 0-2 live on endpoint 0, 3-7 on endpoint 1; groups keep a prefix together
    homes = [0, 0, 0, 1, 1, 1, 1, 1]
    work = Unassigned(["s"] * 8, lambda i: True, homes, groups=[0, 1, 0, 2, 2, 3, 3, 3])
    assert work.take(0, 2) == [("s", [0, 2])]  # its own queue, group 0 whole first
    assert work.take(0, 3) == [("s", [1]), ("s", [7, 6])]  # then the other queue's tail
    assert work.split([1], [5]) == [[("s", [3, 4, 5])]]
    assert not work
