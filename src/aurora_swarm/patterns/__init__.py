"""Patterns that compose: scatter/gather, map, tree reduce, broadcast, blackboard, pipelines.

Every pattern talks to a pool only through the small :class:`Pool` protocol (``size`` and
``send_all_batched``), so patterns run on any :class:`~aurora_swarm.VLLMPool` or sub-pool, and
on a pool of the user's own. Each batched step is one call of the pool, which keeps the number
of HTTP requests close to the number of agents. Patterns return
:class:`~aurora_swarm.Response` objects in input order, and accept them as input, so the
output of one feeds the next without glue. On :class:`~aurora_swarm.testing.FakeFleet`, whose
agents answer ``"ECHO: "`` and the prompt:

>>> import anyio
>>> from aurora_swarm import VLLMPool
>>> from aurora_swarm.patterns import map_gather, tree_reduce
>>> from aurora_swarm.testing import FakeFleet
>>> async def demo(papers):
...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
...         summaries = await map_gather(pool, papers, "Summarize: {item}")
...         return await tree_reduce(pool, None, "Merge: {responses}", fanin=8,
...                                  items=summaries, separator=" + ")
>>> print(anyio.run(demo, ["paper A", "paper B"]).text)
ECHO: Merge: ECHO: Summarize: paper A + ECHO: Summarize: paper B

Failures are data: a failed or empty answer is left out of a merge and recorded (see
:attr:`ReduceTree.dropped`), never lost silently. On a pool made with ``strict=True`` the pool
itself raises :class:`~aurora_swarm.BatchError` instead, and so does the pattern.

Templates are filled by plain placeholder replacement (:func:`fill_template`), so braces in
data (JSON, code) are safe. Aggregators (:func:`majority_vote`, :func:`structured_merge`, ...)
are pure functions over lists of responses.
"""

from ._base import (
    DEFAULT_SEPARATOR,
    Dropped,
    NoAnswerError,
    Pool,
    SliceablePool,
    TaggedPool,
    as_text,
    fill_template,
    usable,
)
from .aggregators import (
    FailureReport,
    MergeResult,
    NumberSummary,
    VoteResult,
    best_of,
    concat,
    failure_report,
    first_number,
    majority_vote,
    same_vote,
    statistics,
    structured_merge,
    top_k,
)
from .blackboard import Blackboard, BoardSnapshot, BoardState, render_board
from .broadcast import broadcast, broadcast_and_reduce
from .embedding import scatter_gather_embeddings
from .pipeline import Stage, StageResult, fan_out_fan_in, run_pipeline
from .scatter_gather import map_gather, scatter_gather
from .tree_reduce import ReduceTree, tree_reduce, tree_reduce_tree

__all__ = [
    "DEFAULT_SEPARATOR",
    "Blackboard",
    "BoardSnapshot",
    "BoardState",
    "Dropped",
    "FailureReport",
    "MergeResult",
    "NoAnswerError",
    "NumberSummary",
    "Pool",
    "ReduceTree",
    "SliceablePool",
    "Stage",
    "StageResult",
    "TaggedPool",
    "VoteResult",
    "as_text",
    "best_of",
    "broadcast",
    "broadcast_and_reduce",
    "concat",
    "failure_report",
    "fan_out_fan_in",
    "fill_template",
    "first_number",
    "majority_vote",
    "map_gather",
    "render_board",
    "run_pipeline",
    "same_vote",
    "scatter_gather",
    "scatter_gather_embeddings",
    "statistics",
    "structured_merge",
    "top_k",
    "tree_reduce",
    "tree_reduce_tree",
    "usable",
]

from .._exports import own_exports

own_exports(__name__, globals(), __all__)
del own_exports
