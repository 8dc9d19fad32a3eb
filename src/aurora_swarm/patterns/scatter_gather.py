"""Scatter/gather: many prompts over the whole pool, answers back in input order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .._exceptions import ConfigurationError
from .._progress import ProgressSetting
from .._response import Response
from .._tablekind import whole_table
from ._base import (
    Pool,
    as_text,
    check_max_tokens,
    check_prompts,
    fill_template,
    require_placeholder,
)
from ._tracking import ResultHook, send, tracking

__all__ = ["map_gather", "scatter_gather"]


async def scatter_gather(
    pool: Pool, prompts: Sequence[str], max_tokens: int | None = None,
    *, on_result: ResultHook | None = None, progress: ProgressSetting = False,
) -> list[Response]:
    """Send every prompt over the pool, batched; ``out[i]`` answers ``prompts[i]``.

    One call of the pool's ``send_all_batched``: with a batching
    :class:`~aurora_swarm.VLLMPool` many prompts share each HTTP request; with
    ``use_batch=False`` the pool sends one request per prompt. A prompt that fails gets a
    failed :class:`~aurora_swarm.Response` in its slot; no other prompt is lost.

    Parameters
    ----------
    pool:
        Any :class:`~aurora_swarm.patterns.Pool` (a pool or a sub-pool).
    prompts:
        The prompts; an empty list returns ``[]`` without a request.
    max_tokens:
        Tokens to generate per prompt; ``None`` leaves it to the pool.
    on_result:
        Called as ``on_result(index, response)`` as each prompt settles (the pool must take
        ``on_result=``, as :class:`~aurora_swarm.VLLMPool` does).
    progress:
        ``True`` (or a mapping of ``tqdm`` options) draws a progress bar; see
        :meth:`VLLMPool.send_all_batched <aurora_swarm.VLLMPool.send_all_batched>`.

    Returns
    -------
    list of Response
        One answer per prompt, in input order.

    Examples
    --------
    On :class:`~aurora_swarm.testing.FakeFleet`, whose agents answer ``"ECHO: "`` and the
    prompt:

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.patterns import scatter_gather
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo(genes):
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         answers = await scatter_gather(pool, [f"Analyze gene {g}" for g in genes])
    ...     return [a.text for a in answers if a.success]
    >>> anyio.run(demo, ["BRCA1", "TP53"])
    ['ECHO: Analyze gene BRCA1', 'ECHO: Analyze gene TP53']
    """
    prompts = check_prompts(prompts)
    check_max_tokens(max_tokens, "max_tokens")
    if not prompts:
        return []
    with tracking(pool, progress, on_result, len(prompts), "scatter_gather") as hook:
        return await send(pool, prompts, max_tokens, hook)


async def map_gather(
    pool: Pool,
    items: Iterable[object],
    prompt_template: str,
    max_tokens: int | None = None,
    *,
    placeholder: str = "item",
    on_result: ResultHook | None = None,
    progress: ProgressSetting = False,
) -> list[Response]:
    """Fill ``prompt_template`` with each item and :func:`scatter_gather` the prompts.

    ``{item}`` is replaced by plain text replacement (see
    :func:`~aurora_swarm.patterns.fill_template`), so braces in items or in the template are
    safe. An item that is a :class:`~aurora_swarm.Response` stands for its ``text``, which is
    how one pattern's answers feed the next; a *failed* response item is passed through as its
    own answer, without a request.

    Parameters
    ----------
    pool:
        Any :class:`~aurora_swarm.patterns.Pool`.
    items:
        The work items: strings, responses, or anything ``str()`` renders; a pandas Series
        (a DataFrame column) or a Hugging Face ``Dataset`` column too
        (:func:`aurora_swarm.tables.to_dataframe` turns the answers into a table with the
        Series' index).
    prompt_template:
        A prompt with a ``{item}`` placeholder.
    max_tokens:
        Tokens to generate per prompt; ``None`` leaves it to the pool.
    placeholder:
        The placeholder's name, ``"item"`` by default.
    on_result:
        Called as ``on_result(index, response)`` as each item settles (``index`` is the
        item's position).
    progress:
        ``True`` (or a mapping of ``tqdm`` options) draws a progress bar over the items.

    Returns
    -------
    list of Response
        One answer per item, in input order.

    Raises
    ------
    ~aurora_swarm.ConfigurationError
        If the template has no ``{item}`` placeholder.

    Examples
    --------
    The answers of one call are the items of the next (on
    :class:`~aurora_swarm.testing.FakeFleet`, whose agents answer ``"ECHO: "`` and the prompt):

    >>> import anyio
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.patterns import map_gather
    >>> from aurora_swarm.testing import FakeFleet
    >>> async def demo():
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         genes = await map_gather(pool, ["BRCA1", "TP53"], "Summarize {item}.")
    ...         verdicts = await map_gather(pool, genes, "Is this right? {item}")
    ...     return [v.text for v in verdicts]
    >>> for text in anyio.run(demo):
    ...     print(text)
    ECHO: Is this right? ECHO: Summarize BRCA1.
    ECHO: Is this right? ECHO: Summarize TP53.
    """
    require_placeholder(prompt_template, placeholder, "prompt_template")
    check_max_tokens(max_tokens, "max_tokens")
    problem = whole_table(items)
    if problem is not None:
        raise ConfigurationError(problem)
    items = list(items)
    results: list[Response | None] = [None] * len(items)
    prompts: list[str] = []
    slots: list[int] = []
    for index, item in enumerate(items):
        if isinstance(item, Response) and not item.success:
            results[index] = item
            continue
        prompts.append(fill_template(prompt_template, **{placeholder: as_text(item)}))
        slots.append(index)
    with tracking(pool, progress, on_result, len(items), "map_gather") as hook:
        if hook is not None:
            for index, passed in enumerate(results):
                if passed is not None:
                    hook(index, passed)
        if prompts:
            answers = await send(pool, prompts, max_tokens,
                                 None if hook is None else (lambda k, r: hook(slots[k], r)))
            for slot, answer in zip(slots, answers, strict=True):
                results[slot] = answer
    return [r for r in results if r is not None]
