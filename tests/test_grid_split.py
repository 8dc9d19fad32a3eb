"""The dispatch grid's static splits: the oracle finishes first under the latency model."""

from __future__ import annotations

import itertools

import pytest
from benchmarks.grid_split import equal_split, oracle_split, split_time
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(("n", "m", "expected"), [
    (0, 3, [0, 0, 0]), (7, 3, [3, 2, 2]), (9, 3, [3, 3, 3]), (2, 4, [1, 1, 0, 0]),
])
def test_equal_split(n: int, m: int, expected: list[int]) -> None:
    assert equal_split(n, m) == expected


@pytest.mark.parametrize(("n", "slots", "slowness", "expected"), [
    # Uniform: the equal split.
    (2400, [256] * 8, [1.0] * 8, [300] * 8),
    # One 8x slower endpoint is left out when the others finish in one wave.
    (64, [16] * 8, [8.0] + [1.0] * 7, [0, 10, 9, 9, 9, 9, 9, 9]),
    # Two 3x slower: a third of the waves each (3 waves of 0.3 s beside 9 of 0.1 s).
    (384, [16] * 4, [3.0, 3.0, 1.0, 1.0], [48, 48, 144, 144]),
    # Different slots: shares in proportion to the slots.
    (72, [64, 8], [1.0, 1.0], [64, 8]),
])
def test_oracle_split_table(n: int, slots: list[int], slowness: list[float],
                            expected: list[int]) -> None:
    assert oracle_split(n, slots, slowness, 0.1, 0.005) == expected


def test_bad_fleet_is_refused() -> None:
    with pytest.raises(ValueError, match="one slowness per endpoint"):
        oracle_split(10, [16, 16], [1.0], 0.1, 0.0)
    with pytest.raises(ValueError, match="slots must be >= 1"):
        oracle_split(10, [0], [1.0], 0.1, 0.0)
    with pytest.raises(ValueError, match="prompt_time > 0"):
        oracle_split(10, [4], [1.0], 0.0, 0.0)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 40),
       fleet=st.lists(st.tuples(st.integers(1, 6), st.sampled_from([1.0, 1.5, 3.0, 8.0])),
                      min_size=1, max_size=3))
def test_oracle_split_is_optimal(n: int, fleet: list[tuple[int, float]]) -> None:
    slots = [s for s, _ in fleet]
    slowness = [f for _, f in fleet]
    shares = oracle_split(n, slots, slowness, 0.1, 0.005)
    assert sum(shares) == n and all(x >= 0 for x in shares)
    best = min(split_time(list(split), slots, slowness, 0.1, 0.005)
               for split in itertools.product(range(n + 1), repeat=len(fleet))
               if sum(split) == n)
    assert split_time(shares, slots, slowness, 0.1, 0.005) == pytest.approx(best)
