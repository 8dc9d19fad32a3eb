"""Aggregators: pure functions over responses, on hand-made answers and on the fake fleet."""

from __future__ import annotations

import json

import pytest

from aurora_swarm import ConfigurationError, HTTPStatusError, RequestTimeout, Response, VLLMPool
from aurora_swarm.patterns import (
    best_of,
    broadcast,
    concat,
    failure_report,
    first_number,
    majority_vote,
    map_gather,
    same_vote,
    statistics,
    structured_merge,
    top_k,
)
from aurora_swarm.testing import EndpointBehavior

from .conftest import MODEL, fleet_of, open_pool


def ok(text: str) -> Response:
    return Response(success=True, text=text)


FAILED = Response.failure(HTTPStatusError(503, "busy"))
EMPTY = ok("   ")


# -- majority_vote -------------------------------------------------------------------------------


def test_majority_vote_counts_and_ties() -> None:
    result = majority_vote([ok("b"), ok("a"), ok(" a"), ok("b "), FAILED, EMPTY, ok("c")])
    assert (result.winner, result.count, result.total, result.abstained) == ("b", 2, 5, 2)
    assert result.ties == ("b", "a") and dict(result.counts) == {"a": 2, "b": 2, "c": 1}
    assert result.share == pytest.approx(0.4) and not result.unanimous


def test_majority_vote_is_case_blind_by_default_as_before() -> None:
    answers = [ok("Yes"), ok("no"), ok(" yes "), ok("No"), ok("YES")]
    assert tuple(majority_vote(answers)) == ("yes", pytest.approx(0.6))  # the earlier pair
    assert same_vote(" Yes\n") == "yes"
    kept_apart = majority_vote(answers, normalize=str.strip)
    assert (kept_apart.winner, kept_apart.count) == ("Yes", 1)


def test_majority_vote_normalize_and_unanimous() -> None:
    result = majority_vote([ok("Yes"), ok("yes."), ok("YES")],
                           normalize=lambda t: t.strip(" .").lower())
    assert result.winner == "yes" and result.unanimous and result.ties == ()


def test_majority_vote_nobody_voted() -> None:
    result = majority_vote([FAILED, EMPTY])
    assert (result.winner, result.total, result.share, result.abstained) == (None, 0, 0.0, 2)
    assert majority_vote([]).winner is None


async def test_majority_vote_over_a_broadcast(pool: VLLMPool) -> None:
    result = majority_vote(await broadcast(pool, "42", copies=9))
    assert result.winner == "echo: 42" and result.unanimous and result.total == 9


# -- concat, best_of, top_k ----------------------------------------------------------------------


def test_concat() -> None:
    assert concat([ok("a"), FAILED, EMPTY, ok("b")]) == "a\nb"
    assert concat([], separator="|") == ""


def test_best_of_and_top_k() -> None:
    answers = [ok("bb"), FAILED, ok("dddd"), ok("a"), ok("cccc"), EMPTY]
    assert best_of(answers, len_score) is answers[2]  # first among equals
    assert best_of([FAILED, EMPTY], len_score) is None
    assert [r.text for r in top_k(answers, 3, len_score)] == ["dddd", "cccc", "bb"]
    assert top_k(answers, 0, len_score) == [] and len(top_k(answers, 99, len_score)) == 4
    with pytest.raises(ConfigurationError, match="k must be"):
        top_k(answers, -1, len_score)


def len_score(response: Response) -> float:
    return float(len(response.text))


async def test_best_of_on_the_fleet(pool: VLLMPool) -> None:
    answers = await map_gather(pool, ["x", "xxx xxx", "xx"], "{item}")
    best = best_of(answers, len_score)
    assert best is not None and best.text == "ECHO: xxx xxx"


# -- structured_merge ----------------------------------------------------------------------------


def test_structured_merge_objects_arrays_fences_and_prose() -> None:
    answers = [
        ok('{"genes": ["A"], "meta": {"n": 1, "src": "x"}}'),
        ok('Here you go:\n```json\n{"genes": ["B"], "meta": {"n": 2, "tag": "t"}}\n```'),
        ok('The answer is {"extra": true} as requested.'),
        ok('[{"id": 1}, {"id": 2}]'),
        ok("not json at all"),
        FAILED,
        EMPTY,
    ]
    result = structured_merge(answers)
    assert result.merged == {"genes": ["A", "B"], "meta": {"n": 1, "src": "x", "tag": "t"},
                             "extra": True}
    assert result.conflicts == ("meta.n",)
    assert result.parsed == 4
    assert result.records[-2:] == [{"id": 1}, {"id": 2}] and len(result.records) == 5
    assert [index for index, _ in result.errors] == [4, 5, 6]


def test_structured_merge_does_not_alias_inputs() -> None:
    result = structured_merge([ok('{"a": {"b": [1]}}'), ok('{"a": {"b": [2]}}')])
    assert result.merged == {"a": {"b": [1, 2]}}
    assert result.records == [{"a": {"b": [1]}}, {"a": {"b": [2]}}]


def test_structured_merge_empty() -> None:
    result = structured_merge([])
    assert (result.merged, result.records, result.parsed, result.errors) == ({}, [], 0, ())


async def test_structured_merge_on_the_fleet(pool: VLLMPool) -> None:
    # The fleet echoes "ECHO: " + prompt, so each answer is JSON inside prose.
    records = [json.dumps({"id": i, "tags": [f"t{i}"]}) for i in range(5)]
    result = structured_merge(await map_gather(pool, records, "{item}"))
    assert result.parsed == 5 and result.merged["tags"] == [f"t{i}" for i in range(5)]
    assert result.merged["id"] == 0 and result.conflicts == ("id",)


# -- statistics ----------------------------------------------------------------------------------


def test_statistics_summary() -> None:
    answers = [ok("3"), ok("value: 5.5 units"), ok("-1e1"), FAILED, EMPTY, ok("none"), ok("7")]
    s = statistics(answers)
    assert s.values == (3.0, 5.5, -10.0, 7.0) and s.rejected == (3, 4, 5)
    assert s.count == 4 and s.min == -10.0 and s.max == 7.0
    assert s.mean == pytest.approx(1.375) and s.median == pytest.approx(4.25)
    assert s.stdev is not None and s.stdev > 0


def test_statistics_edge_cases() -> None:
    assert statistics([]).count == 0 and statistics([]).mean is None
    one = statistics([ok("2")])
    assert (one.mean, one.stdev) == (2.0, 0.0)

    def strict(text: str) -> float | None:
        return float(text)  # raises ValueError for non-numbers

    assert statistics([ok("1.5"), ok("x"), ok("nan")], extract=strict).rejected == (1, 2)
    assert first_number("no digits") is None and first_number("x=.5") == 0.5


async def test_statistics_on_the_fleet(pool: VLLMPool) -> None:
    s = statistics(await map_gather(pool, [1, 2, 3, 4], "{item}"))
    assert (s.count, s.mean) == (4, 2.5)


# -- failure_report ------------------------------------------------------------------------------


def test_failure_report_counts_by_cause_and_endpoint() -> None:
    answers = [ok("a"), FAILED, EMPTY, Response.failure(RequestTimeout("slow")),
               Response.failure(HTTPStatusError(503, "busy")), Response(success=False)]
    report = failure_report(answers)
    assert (report.total, report.succeeded, report.failed, report.empty) == (6, 1, (1, 3, 4, 5),
                                                                            (2,))
    assert dict(report.by_cause) == {"HTTP 503": 2, "RequestTimeout": 1, "unknown": 1}
    assert dict(report.by_endpoint) == {"?": 4}
    assert not report.ok and str(report).startswith("1/6 usable, 4 failed, 1 empty")
    assert failure_report([]).ok and failure_report([]).total == 0


async def test_failure_report_on_a_failing_fleet() -> None:
    behaviors = {0: EndpointBehavior(default_action="400")}
    async with fleet_of(1, model=MODEL, behaviors=behaviors) as fleet:
        async with open_pool(fleet.endpoints, transport=fleet.transport) as pool:
            answers = await map_gather(pool, ["a", "b"], "{item}")
    report = failure_report(answers)
    assert report.failed == (0, 1) and dict(report.by_cause) == {"HTTP 400": 2}
    assert dict(report.by_endpoint) == {str(fleet.endpoints[0]): 2}
