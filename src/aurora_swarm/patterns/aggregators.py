"""Aggregators: pure functions that turn a list of answers into one result.

Each takes a sequence of :class:`~aurora_swarm.Response` (the output of any pattern) and never
sends a request. Failed and empty answers never count as answers; :func:`failure_report`
explains them.
"""

from __future__ import annotations

import json
import math
import re
import statistics as _stats
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from .._exceptions import ConfigurationError, RequestError
from .._response import Response
from ._base import usable

__all__ = [
    "FailureReport",
    "MergeResult",
    "NumberSummary",
    "VoteResult",
    "best_of",
    "concat",
    "failure_report",
    "first_number",
    "majority_vote",
    "same_vote",
    "statistics",
    "structured_merge",
    "top_k",
]

Score = Callable[[Response], float]


def _counted(response: Response, include_failures: bool) -> bool:
    """Whether an aggregator counts ``response``: usable, or any at all with include_failures."""
    return include_failures or usable(response)


def _score(score: Score | None, score_fn: Score | None) -> Score:
    if score is not None and score_fn is not None:
        raise ConfigurationError("give score= or score_fn=, not both")
    chosen = score if score is not None else score_fn
    if chosen is None:
        raise ConfigurationError("a score function is needed: score=lambda r: ...")
    return chosen


# -- votes ---------------------------------------------------------------------------------------


@attrs.frozen
class VoteResult:
    """The outcome of :func:`majority_vote`.

    Attributes
    ----------
    winner:
        The most frequent (normalized) answer; the first seen among ties; ``None`` when nobody
        voted.
    count:
        Votes for the winner.
    total:
        Votes cast (usable answers).
    ties:
        Every answer with the winner's count, in first-seen order, when there is more than one.
    counts:
        Votes per answer.
    abstained:
        Answers that failed or were empty.
    """

    winner: str | None
    count: int
    total: int
    ties: tuple[str, ...] = ()
    counts: Mapping[str, int] = attrs.field(factory=dict)
    abstained: int = 0

    @property
    def share(self) -> float:
        """``count / total`` (0.0 when nobody voted)."""
        return self.count / self.total if self.total else 0.0

    @property
    def unanimous(self) -> bool:
        """Whether every vote went to the winner (and there was at least one)."""
        return self.total > 0 and self.count == self.total

    def __iter__(self) -> Iterator[Any]:
        """``winner, share = majority_vote(...)`` (winner ``""`` when nobody voted)."""
        return iter((self.winner if self.winner is not None else "", self.share))


def same_vote(text: str) -> str:
    """The default vote of an answer: stripped of white space and lower-cased, so ``"Yes"`` and
    ``"yes "`` are one vote (as in the earlier system)."""
    return text.strip().lower()


def majority_vote(
    responses: Sequence[Response], normalize: Callable[[str], str] = same_vote,
    include_failures: bool = False,
) -> VoteResult:
    """The most frequent answer, after ``normalize``.

    The result also unpacks as the earlier pair: ``winner, share = majority_vote(responses)``.

    Parameters
    ----------
    responses:
        The answers; failed and empty ones abstain.
    normalize:
        Maps an answer's text to its vote (default :func:`same_vote`: strip white space and
        lower-case, as the earlier system compared answers); ``str.strip`` keeps case apart.
    include_failures:
        Count failed and empty answers too (as the vote their text makes, ``""``).

    Examples
    --------
    >>> from aurora_swarm import Response
    >>> from aurora_swarm.patterns import majority_vote
    >>> votes = [Response(success=True, text=t) for t in ["Yes", "no ", "yes"]]
    >>> result = majority_vote(votes)
    >>> result.winner, result.count, result.total, round(result.share, 2)
    ('yes', 2, 3, 0.67)
    """
    votes = [normalize(r.text) for r in responses if _counted(r, include_failures)]
    votes = [v for v in votes if v or include_failures]
    abstained = len(responses) - len(votes)
    if not votes:
        return VoteResult(None, 0, 0, abstained=abstained)
    counts = Counter(votes)
    ranked = counts.most_common()  # stable: equal counts keep first-seen order
    top = ranked[0][1]
    tied = tuple(answer for answer, n in ranked if n == top)
    return VoteResult(tied[0], top, len(votes), tied if len(tied) > 1 else (),
                      dict(counts), abstained)


# -- text ----------------------------------------------------------------------------------------


def concat(
    responses: Sequence[Response], separator: str = "\n", include_failures: bool = False
) -> str:
    """The usable answers' texts joined by ``separator``, in order (all, ``include_failures``).

    Examples
    --------
    >>> from aurora_swarm import Response
    >>> from aurora_swarm.patterns import concat
    >>> concat([Response(success=True, text="a"), Response(success=False),
    ...         Response(success=True, text="b")], separator=", ")
    'a, b'
    """
    return separator.join(r.text for r in responses if _counted(r, include_failures))


def best_of(
    responses: Sequence[Response], score: Score | None = None, include_failures: bool = False,
    *, score_fn: Score | None = None,
) -> Response | None:
    """The usable answer with the highest ``score(response)``; the first among equals.

    Returns ``None`` when no answer is usable. ``score_fn=`` is the earlier name of ``score``;
    ``include_failures`` lets failed and empty answers compete too.

    Examples
    --------
    >>> from aurora_swarm import Response
    >>> from aurora_swarm.patterns import best_of
    >>> answers = [Response(success=True, text=t) for t in ["short", "much longer", "mid"]]
    >>> best_of(answers, score=lambda r: len(r.text)).text
    'much longer'
    """
    score = _score(score, score_fn)
    best: Response | None = None
    best_score = -math.inf
    for response in responses:
        if not _counted(response, include_failures):
            continue
        value = score(response)
        if best is None or value > best_score:
            best, best_score = response, value
    return best


def top_k(
    responses: Sequence[Response], k: int, score: Score | None = None,
    include_failures: bool = False, *, score_fn: Score | None = None,
) -> list[Response]:
    """The ``k`` usable answers with the highest scores, best first (ties in input order).

    ``score_fn=`` is the earlier name of ``score``; ``include_failures`` lets failed and empty
    answers compete too.

    Examples
    --------
    >>> from aurora_swarm import Response
    >>> from aurora_swarm.patterns import top_k
    >>> answers = [Response(success=True, text=t) for t in ["3", "9", "5", "9"]]
    >>> [r.text for r in top_k(answers, 3, score=lambda r: float(r.text))]
    ['9', '9', '5']
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigurationError(f"k must be an int >= 0, got {k!r}")
    score = _score(score, score_fn)
    scored = [(score(r), position, r) for position, r in enumerate(responses)
              if _counted(r, include_failures)]
    scored.sort(key=lambda entry: (-entry[0], entry[1]))
    return [r for _, _, r in scored[:k]]


# -- JSON ----------------------------------------------------------------------------------------


@attrs.frozen
class MergeResult:
    """The outcome of :func:`structured_merge`.

    Attributes
    ----------
    merged:
        The JSON objects deep-merged: nested objects merge, lists concatenate, and for a
        scalar set twice the first value stays (see ``conflicts``).
    records:
        Every parsed value in one flat list: an array answer adds its elements, any other
        value is added as one record.
    parsed:
        How many answers parsed.
    errors:
        ``(index, reason)`` for each answer that failed, was empty, or did not parse.
    conflicts:
        Dotted key paths that got different scalar values.
    error_agents:
        The ``agent_index`` of each answer in ``errors``.

    The result also unpacks as ``records, errors = structured_merge(responses)``, with
    ``errors`` as ``{"agent_index", "error"}`` dicts.
    """

    merged: dict[str, Any]
    records: list[Any]
    parsed: int
    errors: tuple[tuple[int, str], ...] = ()
    conflicts: tuple[str, ...] = ()
    error_agents: tuple[int, ...] = ()

    def __iter__(self) -> Iterator[Any]:
        """``records, errors = structured_merge(...)``, errors as ``{agent_index, error}``."""
        errors = [{"agent_index": agent, "error": reason}
                  for agent, (_, reason) in zip(self.error_agents, self.errors, strict=True)]
        return iter((self.records, errors))


_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)


def _parse_json(text: str) -> Any:
    """Parse an answer that is JSON, holds a fenced JSON block, or JSON inside prose."""
    text = text.strip()
    candidates = [text, *_FENCE.findall(text)]
    for opening, closing in (("{", "}"), ("[", "]")):
        start, stop = text.find(opening), text.rfind(closing)
        if 0 <= start < stop:
            candidates.append(text[start : stop + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError("no JSON value found")


def _deep_merge(into: dict[str, Any], value: Mapping[str, Any], path: str,
                conflicts: list[str]) -> None:
    for key, new in value.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in into:
            into[key] = json.loads(json.dumps(new))  # a private copy
        elif isinstance(into[key], dict) and isinstance(new, Mapping):
            _deep_merge(into[key], new, where, conflicts)
        elif isinstance(into[key], list) and isinstance(new, list):
            into[key].extend(json.loads(json.dumps(new)))
        elif into[key] != new and where not in conflicts:
            conflicts.append(where)


def structured_merge(
    responses: Sequence[Response], include_failures: bool = False
) -> MergeResult:
    """Parse each answer as JSON and merge them (see :class:`MergeResult`).

    An answer may be bare JSON, a fenced ``json`` code block, or JSON inside prose. With
    ``include_failures`` a failed answer's text is parsed too instead of counted as an error.

    Examples
    --------
    >>> from aurora_swarm import Response
    >>> from aurora_swarm.patterns import structured_merge
    >>> answers = [Response(success=True, text=t) for t in
    ...            ['{"genes": ["A"], "n": 1}', '```json\\n{"genes": ["B"], "n": 2}\\n```', "nope"]]
    >>> result = structured_merge(answers)
    >>> result.merged, result.parsed, result.conflicts, result.errors[0][0]
    ({'genes': ['A', 'B'], 'n': 1}, 2, ('n',), 2)
    """
    merged: dict[str, Any] = {}
    records: list[Any] = []
    errors: list[tuple[int, str]] = []
    conflicts: list[str] = []
    parsed = 0
    agents: list[int] = []
    for index, response in enumerate(responses):
        if not _counted(response, include_failures):
            errors.append((index, response.error or "empty answer"))
            agents.append(response.agent_index)
            continue
        try:
            value = _parse_json(response.text)
        except ValueError as exc:
            errors.append((index, str(exc)))
            agents.append(response.agent_index)
            continue
        parsed += 1
        if isinstance(value, list):
            records.extend(value)
        else:
            records.append(value)
        if isinstance(value, dict):
            _deep_merge(merged, value, "", conflicts)
    return MergeResult(merged, records, parsed, tuple(errors), tuple(conflicts), tuple(agents))


# -- numbers -------------------------------------------------------------------------------------


@attrs.frozen
class NumberSummary:
    """The outcome of :func:`statistics`; the fields are ``None`` when no number was found.

    Attributes
    ----------
    count:
        Numbers found.
    mean, median, stdev, min, max:
        Their statistics (``stdev`` is the sample standard deviation, 0.0 for one number).
    values:
        The numbers, in answer order.
    rejected:
        Indices of answers that failed, were empty, or held no number.

    Indexing by ``"mean"``, ``"std"``, ``"median"``, ``"min"``, ``"max"`` (and ``dict()``)
    gives the earlier dict form.
    """

    count: int
    mean: float | None
    median: float | None
    stdev: float | None
    min: float | None
    max: float | None
    values: tuple[float, ...] = ()
    rejected: tuple[int, ...] = ()

    _KEYS = ("mean", "std", "median", "min", "max")

    def keys(self) -> tuple[str, ...]:
        """The keys of the earlier dict form: mean, std, median, min, max."""
        return self._KEYS

    def __getitem__(self, key: str) -> float:
        """``summary["mean"]`` ... as the earlier dict (``"std"`` is ``stdev``; 0.0 for none)."""
        if key not in self._KEYS:
            raise KeyError(key)
        value = getattr(self, "stdev" if key == "std" else key)
        return 0.0 if value is None else float(value)


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def first_number(text: str) -> float | None:
    """The first number written in ``text``, or ``None``.

    Examples
    --------
    >>> from aurora_swarm.patterns import first_number
    >>> first_number("About -1.5e3 cells"), first_number("none")
    (-1500.0, None)
    """
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def statistics(
    responses: Sequence[Response], extract: Callable[[str], float | None] = first_number,
    include_failures: bool = False, *, extract_fn: Callable[[Response], float] | None = None,
) -> NumberSummary:
    """Summary statistics of the numbers in the answers.

    Parameters
    ----------
    responses:
        The answers.
    extract:
        Finds an answer's number in its text, ``None`` (or a ``ValueError``) for none; by
        default the first number written in it.
    include_failures:
        Look for numbers in failed and empty answers too.
    extract_fn:
        The earlier form of ``extract``: takes the whole :class:`~aurora_swarm.Response`.

    Examples
    --------
    >>> from aurora_swarm import Response
    >>> from aurora_swarm.patterns import statistics
    >>> answers = [Response(success=True, text=t) for t in ["4", "about 6 K", "n/a", "8.0"]]
    >>> s = statistics(answers)
    >>> s.count, s.mean, s.median, s.min, s.max, s.rejected
    (3, 6.0, 6.0, 4.0, 8.0, (2,))
    """
    values: list[float] = []
    rejected: list[int] = []
    for index, response in enumerate(responses):
        value: float | None = None
        if _counted(response, include_failures):
            try:
                value = (extract_fn(response) if extract_fn is not None
                         else extract(response.text))
            except ValueError:
                value = None
        if value is None or not math.isfinite(value):
            rejected.append(index)
        else:
            values.append(float(value))
    if not values:
        return NumberSummary(0, None, None, None, None, None, (), tuple(rejected))
    return NumberSummary(
        count=len(values),
        mean=_stats.fmean(values),
        median=float(_stats.median(values)),
        stdev=_stats.stdev(values) if len(values) > 1 else 0.0,
        min=min(values),
        max=max(values),
        values=tuple(values),
        rejected=tuple(rejected),
    )


# -- failures ------------------------------------------------------------------------------------


@attrs.frozen
class FailureReport:
    """The outcome of :func:`failure_report`; ``str()`` gives a readable summary.

    Attributes
    ----------
    total:
        Answers looked at.
    succeeded:
        Usable answers.
    failed:
        Indices of failed answers.
    empty:
        Indices of successful answers with no text.
    by_cause:
        Failed answers counted by cause (``"HTTP 503"``, ``"ConnectError"``, ...).
    by_endpoint:
        Failed answers counted by the endpoint that last tried them (``"?"`` when none did).
    errors:
        ``(index, error message)`` of each failed answer.
    failed_agents:
        The ``agent_index`` of each failed answer.

    Indexing by ``"total"``, ``"success_count"``, ``"failure_count"`` and ``"failures"`` (and
    ``dict()``) gives the earlier dict form.
    """

    total: int
    succeeded: int
    failed: tuple[int, ...]
    empty: tuple[int, ...]
    by_cause: Mapping[str, int]
    by_endpoint: Mapping[str, int]
    errors: tuple[tuple[int, str], ...]
    failed_agents: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every answer is usable."""
        return self.succeeded == self.total

    _KEYS = ("total", "success_count", "failure_count", "failures")

    def keys(self) -> tuple[str, ...]:
        """The keys of the earlier dict form."""
        return self._KEYS

    def __getitem__(self, key: str) -> Any:
        """The earlier dict form: ``total``, ``success_count`` (answers that did not fail,
        empty ones included), ``failure_count`` and ``failures`` (``{agent_index, error}``)."""
        if key == "total":
            return self.total
        if key == "success_count":
            return self.total - len(self.failed)
        if key == "failure_count":
            return len(self.failed)
        if key == "failures":
            return [{"agent_index": agent, "error": error}
                    for agent, (_, error) in zip(self.failed_agents, self.errors, strict=True)]
        raise KeyError(key)

    def __str__(self) -> str:
        lines = [f"{self.succeeded}/{self.total} usable, {len(self.failed)} failed, "
                 f"{len(self.empty)} empty"]
        lines += [f"  {cause}: {n}" for cause, n in sorted(self.by_cause.items())]
        return "\n".join(lines)


def _cause(response: Response) -> str:
    exc = response.exception
    if isinstance(exc, RequestError):
        return exc.cause
    return type(exc).__name__ if exc is not None else "unknown"


def failure_report(responses: Sequence[Response]) -> FailureReport:
    """Which answers failed or came back empty, and why, counted by cause and endpoint.

    Examples
    --------
    >>> from aurora_swarm import HTTPStatusError, Response
    >>> from aurora_swarm.patterns import failure_report
    >>> answers = [Response(success=True, text="ok"), Response(success=True, text=""),
    ...            Response.failure(HTTPStatusError(503, "busy"))]
    >>> report = failure_report(answers)
    >>> report.failed, report.empty, dict(report.by_cause)
    ((2,), (1,), {'HTTP 503': 1})
    """
    failed = tuple(i for i, r in enumerate(responses) if not r.success)
    empty = tuple(i for i, r in enumerate(responses) if r.success and not r.text.strip())
    by_cause = Counter(_cause(responses[i]) for i in failed)
    by_endpoint = Counter(str(responses[i].endpoint or "?") for i in failed)
    errors = tuple((i, responses[i].error or "unknown error") for i in failed)
    return FailureReport(
        total=len(responses),
        succeeded=len(responses) - len(failed) - len(empty),
        failed=failed,
        empty=empty,
        by_cause=dict(by_cause),
        by_endpoint=dict(by_endpoint),
        errors=errors,
        failed_agents=tuple(responses[i].agent_index for i in failed),
    )
