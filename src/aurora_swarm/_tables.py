"""pandas and Hugging Face ``datasets`` at the edges: tables in, tables out.

Neither library is a dependency: a table is recognised by its type's module without importing
anything, and pandas or datasets is imported only by the function that builds one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from ._exceptions import ConfigurationError, JobFileError
from ._job_input import JobItem, item_from_record
from ._job_output import JobResult, failure_cause, read_results
from ._prompts import is_message
from ._response import Response
from ._tablekind import table_kind

__all__ = ["table_items", "to_dataframe", "to_dataset"]

COLUMNS = ("text", "success", "finish_reason", "prompt_tokens", "completion_tokens",
           "endpoint", "error", "cause", "latency", "attempts")
"""The columns of :func:`to_dataframe` and :func:`to_dataset`, after the index."""


def _plain(label: object) -> Any:
    """An index label as a JSON-ready id: numpy integers become int."""
    item = getattr(label, "item", None)
    return item() if callable(item) and not isinstance(label, str | int) else label


def table_items(items: object) -> Iterable[JobItem] | None:
    """A job's items read lazily from a pandas Series or DataFrame or a ``datasets.Dataset``
    (``None`` for anything else). A Series' values are prompts and its index labels the ids;
    a table's rows are read like JSONL lines (the index label is the id when there is no
    ``id`` column)."""
    kind = table_kind(items)
    if kind in ("pandas.Series", "pandas.DataFrame", "datasets.Dataset"):
        return _TableItems(items, kind)
    return None


@attrs.frozen
class _TableItems:
    table: Any
    kind: str

    def __iter__(self) -> Iterator[JobItem]:
        def error(position: int | None, problem: str) -> JobFileError:
            return JobFileError(f"items[{position}]", None, problem)

        if self.kind == "pandas.Series":
            for position, (label, value) in enumerate(self.table.items()):
                if not (isinstance(value, str) or (isinstance(value, list) and value
                                                   and all(map(is_message, value)))):
                    raise error(position, f"expected a prompt string, got {value!r}")
                yield JobItem(_plain(label), value, position)
        elif self.kind == "pandas.DataFrame":
            columns = [str(c) for c in self.table.columns]
            rows = self.table.itertuples(index=True, name=None)
            for position, (label, *values) in enumerate(rows):
                record = dict(zip(columns, values, strict=True))
                record.setdefault("id", _plain(label))
                yield item_from_record(record, position, position, None, error, line=None)
        else:
            for position, record in enumerate(self.table):
                yield item_from_record(record, position, position, None, error, line=None)


def _rows(results: Sequence[Response] | Sequence[JobResult] | str | os.PathLike[str],
          index: object) -> tuple[str | None, list[Any], dict[str, list[Any]]]:
    if isinstance(results, str | os.PathLike):
        results = read_results(results)
    if isinstance(results, Mapping) or not isinstance(results, Sequence):
        raise ConfigurationError(
            "results must be a list of Response or JobResult, or a results file path; got "
            f"{type(results).__name__}")
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    labels: list[Any] = []
    jobs = bool(results) and all(isinstance(r, JobResult) for r in results)
    for position, result in enumerate(results):
        if isinstance(result, JobResult):
            labels.append(result.id)
            row = _job_row(result)
        elif isinstance(result, Response):
            labels.append(position)
            row = _response_row(result)
        else:
            raise ConfigurationError(
                f"results[{position}] is a {type(result).__name__}, not a Response or JobResult")
        for column, value in zip(COLUMNS, row, strict=True):
            columns[column].append(value)
    name: str | None = "id" if jobs else "index"
    if index is not None:
        frame = table_kind(index) in ("pandas.Series", "pandas.DataFrame")
        given: Any = index.index if frame else index  # type: ignore[attr-defined]
        if isinstance(given, str) or not isinstance(given, Iterable):
            raise ConfigurationError(
                f"index must be a Series, DataFrame, Index or list of labels, got {index!r}")
        labels = list(given)
        if len(labels) != len(results):
            raise ConfigurationError(
                f"index has {len(labels)} labels for {len(results)} results")
        name = getattr(given, "name", None)  # the input's own index name, even None
    return name, labels, columns


def _response_row(r: Response) -> tuple[Any, ...]:
    usage = r.usage
    return (r.text, r.success, r.finish_reason,
            usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
            str(r.endpoint) if r.endpoint is not None else None, r.error or None,
            failure_cause(r.exception), r.latency, r.attempts)


def _job_row(r: JobResult) -> tuple[Any, ...]:
    usage = r.usage
    return (r.text, r.success, r.finish_reason,
            usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
            r.endpoint, r.error, r.cause, r.latency, r.attempts)


def to_dataframe(
    results: Sequence[Response] | Sequence[JobResult] | str | os.PathLike[str],
    index: object = None,
) -> Any:
    """Results as a pandas DataFrame: one row per prompt, indexed like the input.

    Needs pandas (``pip install "aurora-swarm[tables]"``).

    Parameters
    ----------
    results:
        Responses of a call (``out[i]`` answers input ``i``), :class:`~aurora_swarm.jobs.JobResult`
        objects, or a job's results file (read with
        :func:`~aurora_swarm.jobs.read_results`, in input order).
    index:
        The input's index: a pandas Series or DataFrame (its ``index`` is taken), an Index, or
        a sequence of labels, one per result. Left out, responses are indexed by position and
        job results by their ``id``.

    Returns
    -------
    pandas.DataFrame
        Columns ``text``, ``success``, ``finish_reason``, ``prompt_tokens``,
        ``completion_tokens``, ``endpoint``, ``error``, ``cause``, ``latency``, ``attempts``.
        Token counts are what the server reported for the prompt: a batched request reports
        one total for all its prompts (in :meth:`VLLMPool.stats
        <aurora_swarm.VLLMPool.stats>`), so its prompts' counts are empty.

    Examples
    --------
    >>> import anyio, pandas as pd
    >>> from aurora_swarm import VLLMPool
    >>> from aurora_swarm.patterns import map_gather
    >>> from aurora_swarm.tables import to_dataframe
    >>> from aurora_swarm.testing import FakeFleet
    >>> genes = pd.Series(["BRCA1", "TP53"], index=["g7", "g9"], name="gene")
    >>> async def demo():
    ...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
    ...         return await map_gather(pool, genes, "Summarize {item}.")
    >>> frame = to_dataframe(anyio.run(demo), index=genes)
    >>> frame[["text", "success", "finish_reason"]]
                          text  success finish_reason
    g7  ECHO: Summarize BRCA1.     True          stop
    g9   ECHO: Summarize TP53.     True          stop
    """
    try:
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('to_dataframe needs pandas: pip install "aurora-swarm[tables]"') from exc
    name, labels, columns = _rows(results, index)
    return pd.DataFrame(columns, index=pd.Index(labels, name=name))


def to_dataset(
    results: Sequence[Response] | Sequence[JobResult] | str | os.PathLike[str],
    index: object = None,
) -> Any:
    """Results as a Hugging Face ``datasets.Dataset``, the index as its first column.

    Needs datasets (``pip install "aurora-swarm[datasets]"``). Arguments as for
    :func:`to_dataframe`.

    Returns
    -------
    datasets.Dataset
        Columns ``index`` (or ``id`` for job results) then those of :func:`to_dataframe`.
    """
    try:
        import datasets  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'to_dataset needs Hugging Face datasets: pip install "aurora-swarm[datasets]"'
        ) from exc
    name, labels, columns = _rows(results, index)
    return datasets.Dataset.from_dict({name or "index": labels, **columns})
