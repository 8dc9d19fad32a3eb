"""The aggregators under the earlier module name (the same as in :mod:`aurora_swarm.patterns`)."""

from .patterns.aggregators import (
    FailureReport,
    MergeResult,
    NumberSummary,
    VoteResult,
    best_of,
    concat,
    failure_report,
    first_number,
    majority_vote,
    statistics,
    structured_merge,
    top_k,
)

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
    "statistics",
    "structured_merge",
    "top_k",
]
