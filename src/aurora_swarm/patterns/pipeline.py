"""Pipelines: stages whose prompts are templates over the previous stage's output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .._exceptions import ConfigurationError
from .._progress import ProgressSetting, check_progress
from .._response import Response
from ._base import (
    DEFAULT_SEPARATOR,
    Dropped,
    Pool,
    SliceablePool,
    as_text,
    check_max_tokens,
    check_prompts,
    drop_reason,
    fill_template,
    require_placeholder,
    usable,
)
from ._tracking import labelled
from .scatter_gather import map_gather, scatter_gather
from .tree_reduce import reduce_levels

__all__ = ["Stage", "StageResult", "fan_out_fan_in", "run_pipeline"]

Transform = Callable[[list[Response]], Any]
Filter = Callable[[Response], bool]


def _check_template(_inst: object, _attr: object, value: str) -> None:
    require_placeholder(value, "input", "Stage.prompt_template")


def _check_agents(_inst: object, _attr: object, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"Stage.n_agents must be an int >= 1 or None, got {value!r}")


def _check_tokens(_inst: object, _attr: object, value: int | None) -> None:
    check_max_tokens(value, "Stage.max_tokens")


@attrs.frozen
class Stage:
    """One step of a pipeline.

    Attributes
    ----------
    name:
        A label, shown in :class:`StageResult`.
    prompt_template:
        A prompt with an ``{input}`` placeholder, filled with the previous stage's output (or
        the pipeline's input) by plain replacement.
    n_agents:
        A broadcast stage sends its prompt this many times (default: once per agent of its
        pool). With ``reuse_agents=False`` it is also the size of the stage's own slice of the
        pool (default: an equal share of the agents left).
    output_transform:
        ``f(kept_responses) -> value`` for the next stage. By default a broadcast stage passes
        on its kept answers' texts joined by newlines, and a scatter stage the kept answers
        themselves (a list, so a following scatter stage maps over them).
    output_filter:
        ``f(response) -> bool``; answers for which it is false are not kept. Failed and empty
        answers are never kept (they are recorded in :attr:`StageResult.dropped`).
    scatter:
        When true the stage maps: its input is a list (a single value counts as a list of one)
        and each element gets its own prompt, as in :func:`~aurora_swarm.patterns.map_gather`.
        When false the one filled prompt is broadcast ``n_agents`` times.
    max_tokens:
        Tokens per answer for this stage (``None``: the pool decides).

    Examples
    --------
    >>> from aurora_swarm.patterns import Stage
    >>> Stage("draft", "Write a title for: {input}", n_agents=4).n_agents
    4
    """

    name: str
    prompt_template: str = attrs.field(validator=_check_template)
    n_agents: int | None = attrs.field(default=None, validator=_check_agents)
    output_transform: Transform | None = None
    output_filter: Filter | None = None
    scatter: bool = False
    max_tokens: int | None = attrs.field(default=None, validator=_check_tokens)


@attrs.frozen
class StageResult:
    """What one stage of :func:`run_pipeline` did, handed to its ``on_stage`` callback.

    Attributes
    ----------
    index:
        The stage's position in the pipeline.
    stage:
        The :class:`Stage`.
    prompts:
        The prompts it sent (a failed response item passed through has ``""``).
    responses:
        Their answers, in order.
    kept:
        The answers that passed (usable, and accepted by ``output_filter``).
    dropped:
        The failed or empty answers (``level`` is the stage index).
    output:
        What the stage passed on.
    """

    index: int
    stage: Stage
    prompts: tuple[str, ...]
    responses: tuple[Response, ...]
    kept: tuple[Response, ...]
    dropped: tuple[Dropped, ...]
    output: Any


def _as_items(value: object) -> list[object]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def _render(value: object) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "\n".join(
            as_text(v) for v in value if not (isinstance(v, Response) and not v.success)
        )
    return as_text(value)


def _stage_pools(pool: Pool, stages: Sequence[Stage], reuse: bool) -> list[Pool]:
    if reuse:
        return [pool] * len(stages)
    if not isinstance(pool, SliceablePool):
        raise ConfigurationError("reuse_agents=False needs a pool with slice(), like VLLMPool")
    fixed = sum(s.n_agents or 0 for s in stages)
    shared = [k for k, s in enumerate(stages) if s.n_agents is None]
    left = pool.size - fixed
    if left < len(shared) or (not shared and left < 0):
        raise ConfigurationError(
            f"the stages need more agents than the pool has ({pool.size}) to partition it")
    sizes = [s.n_agents or 0 for s in stages]
    for position, k in enumerate(shared):
        sizes[k] = left // len(shared) + (1 if position < left % len(shared) else 0)
    pools, start = [], 0
    for size in sizes:
        pools.append(pool.slice(start, start + size))
        start += size
    return pools


async def _run_stage(
    index: int, stage: Stage, pool: Pool, value: object, progress: ProgressSetting = False,
) -> StageResult:
    bar = labelled(progress, "stage", f"{index} {stage.name}")
    if stage.scatter:
        items = _as_items(value)
        prompts = [
            "" if isinstance(item, Response) and not item.success
            else fill_template(stage.prompt_template, input=item)
            for item in items
        ]
        responses = await map_gather(
            pool, items, stage.prompt_template, stage.max_tokens, placeholder="input",
            progress=bar)
    else:
        prompt = fill_template(stage.prompt_template, input=_render(value))
        prompts = [prompt] * (stage.n_agents or pool.size)
        responses = await scatter_gather(pool, prompts, stage.max_tokens, progress=bar)
    keep = stage.output_filter
    kept = [r for r in responses if usable(r) and (keep is None or keep(r))]
    dropped = [Dropped(index, k, r, drop_reason(r)) for k, r in enumerate(responses)
               if not usable(r)]
    if stage.output_transform is not None:
        output: Any = stage.output_transform(kept)
    elif stage.scatter:
        output = kept
    else:
        output = "\n".join(r.text for r in kept)
    return StageResult(index, stage, tuple(prompts), tuple(responses), tuple(kept),
                       tuple(dropped), output)


async def run_pipeline(
    pool: Pool,
    stages: Sequence[Stage],
    initial_input: Any,
    reuse_agents: bool = True,
    *,
    on_stage: Callable[[StageResult], None] | None = None,
    progress: ProgressSetting = False,
) -> Any:
    """Run ``stages`` in order; each stage's output is the next stage's ``{input}``.

    Each stage is one batched call (see :class:`Stage` for broadcast and scatter stages).

    Parameters
    ----------
    pool:
        Any :class:`~aurora_swarm.patterns.Pool`.
    stages:
        The stages, in order.
    initial_input:
        The first stage's input: a value, or a list for a scatter stage.
    reuse_agents:
        When true (default) every stage uses the whole pool. When false each stage gets its
        own contiguous slice of the agents (sized by ``n_agents``), e.g. to keep each stage's
        prompt prefix in its servers' cache; the pool must have ``slice()``. Stages still run
        one after the other, so a partitioned stage leaves the other slices idle.
    on_stage:
        Called with each stage's :class:`StageResult` when the stage is done.
    progress:
        ``True`` (or a mapping of ``tqdm`` options) draws one progress bar per stage.

    Returns
    -------
    object
        The last stage's output.

    Examples
    --------
    Two ideas, then one pick among them (on :class:`~aurora_swarm.testing.FakeFleet`, whose
    agents answer ``"ECHO: "`` and the prompt; a broadcast stage's output is its answers, one
    a line):

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.patterns import Stage, run_pipeline
    >>> from aurora_swarm.testing import FakeFleet
    >>> stages = [
    ...     Stage("ideas", "Suggest an experiment on {input}", n_agents=2),
    ...     Stage("pick", "Pick one: {input}", n_agents=1),
    ... ]
    >>> async def demo():
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         return await run_pipeline(pool, stages, "folding")
    >>> print(anyio.run(demo))
    ECHO: Pick one: ECHO: Suggest an experiment on folding
    ECHO: Suggest an experiment on folding
    """
    check_progress(progress)
    stages = list(stages)
    value = initial_input
    for index, (stage, stage_pool) in enumerate(
        zip(stages, _stage_pools(pool, stages, reuse_agents), strict=True)
    ):
        result = await _run_stage(index, stage, stage_pool, value, progress)
        if on_stage is not None:
            on_stage(result)
        value = result.output
    return value


async def fan_out_fan_in(
    pool: Pool,
    prompt: str | Sequence[str],
    collect_prompt: str,
    n_workers: int | None = None,
    *,
    max_tokens: int | None = None,
    collect_max_tokens: int | None = None,
    collector: Pool | None = None,
    separator: str = DEFAULT_SEPARATOR,
) -> Response:
    """Fan out (one prompt ``n_workers`` times, or a list of prompts), then merge in one answer.

    The fan-out is one batched call; the usable answers, joined by ``separator``, fill the
    ``{responses}`` placeholder of ``collect_prompt`` for one collecting answer. Failed and
    empty answers are left out; when none is usable the result is a failed response carrying a
    :class:`~aurora_swarm.patterns.NoAnswerError`.

    Parameters
    ----------
    pool:
        Any :class:`~aurora_swarm.patterns.Pool`.
    prompt:
        One prompt (sent ``n_workers`` times) or a list of prompts (each sent once).
    collect_prompt:
        The merge prompt; needs ``{responses}``.
    n_workers:
        Copies of a single prompt; ``None`` is ``pool.size``.
    max_tokens:
        Tokens per fan-out answer.
    collect_max_tokens:
        Tokens for the collecting answer; defaults to ``max_tokens``.
    collector:
        The pool that collects (default: ``pool``).
    separator:
        What joins the answers in ``{responses}``.

    Returns
    -------
    ~aurora_swarm.Response
        The collecting answer.

    Examples
    --------
    On :class:`~aurora_swarm.testing.FakeFleet`, whose agents answer ``"ECHO: "`` and the
    prompt:

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.patterns import fan_out_fan_in
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo(sections):
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         return await fan_out_fan_in(pool, [f"Review section {s}" for s in sections],
    ...                                     "Write one report: {responses}", separator="; ")
    >>> print(anyio.run(demo, [1, 2]).text)
    ECHO: Write one report: ECHO: Review section 1; ECHO: Review section 2
    """
    require_placeholder(collect_prompt, "responses", "collect_prompt")
    check_max_tokens(collect_max_tokens, "collect_max_tokens")
    if isinstance(prompt, str):
        copies = pool.size if n_workers is None else n_workers
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ConfigurationError(f"n_workers must be an int >= 1, got {n_workers!r}")
        prompts = [prompt] * copies
    else:
        if n_workers is not None:
            raise ConfigurationError("n_workers applies to one prompt, not to a list of prompts")
        prompts = check_prompts(prompt, "prompt")
    answers = await scatter_gather(pool, prompts, max_tokens)
    collector = collector if collector is not None else pool
    tree = await reduce_levels(
        collector, answers, prompts, collect_prompt, max(2, len(answers)),
        max_tokens=collect_max_tokens if collect_max_tokens is not None else max_tokens,
        separator=separator, min_levels=1, what="fan_out_fan_in",
    )
    return tree.root
