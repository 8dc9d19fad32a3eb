"""Aggregators: pure functions that turn a list of answers into one result.

They never send a request, so they work on the output of any pattern. The answers below are
written by hand, as a model might give them, to show what each aggregator does; failed and
empty answers never count as answers.

Run it with ``python examples/pattern_aggregators.py``.
"""

from aurora_swarm import HTTPStatusError, Response
from aurora_swarm.patterns import (
    best_of,
    concat,
    failure_report,
    majority_vote,
    statistics,
    structured_merge,
    top_k,
)


def answers(*texts: str) -> list[Response]:
    return [Response(success=True, text=t) for t in texts]


def main() -> None:
    votes = [*answers("Yes", "yes ", "No", "yes"), Response(success=True, text="")]
    result = majority_vote(votes, normalize=lambda t: t.strip().lower())
    print(f"vote: {result.winner!r} {result.count}/{result.total} ({result.share:.0%}), "
          f"abstained {result.abstained}, counts {result.counts}")

    temps = answers("Tm = 61.5 C", "about 60 C", "no idea", "62")
    s = statistics(temps)
    print(f"statistics: n={s.count} mean={s.mean:.2f} median={s.median} "
          f"stdev={s.stdev:.2f} rejected={s.rejected}")

    records = answers('{"genes": ["BRCA1"], "organism": "human"}',
                      'Here you go:\n```json\n{"genes": ["TP53"], "organism": "mouse"}\n```',
                      "I cannot answer in JSON.")
    merged = structured_merge(records)
    print(f"structured_merge: {merged.merged}, parsed {merged.parsed}, "
          f"conflicts {merged.conflicts}, errors at {[i for i, _ in merged.errors]}")

    drafts = answers("short", "a much longer draft", "a mid draft")
    best = best_of(drafts, score=lambda r: len(r.text))  # None when no answer is usable
    print("best_of:", best.text if best else None)
    print("top_k:", [r.text for r in top_k(drafts, 2, score=lambda r: len(r.text))])
    print("concat:", concat(drafts, separator=" | "))

    mixed = [*drafts, Response.failure(HTTPStatusError(503, "server busy"))]
    print(failure_report(mixed))


if __name__ == "__main__":
    main()
