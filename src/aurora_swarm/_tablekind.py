"""Recognise pandas and Hugging Face ``datasets`` tables without importing either (internal)."""

from __future__ import annotations

__all__ = ["table_kind", "whole_table"]


def table_kind(value: object) -> str | None:
    """``"pandas.Series"``, ``"pandas.DataFrame"``, ``"datasets.Dataset"`` or None."""
    cls = type(value)
    package = cls.__module__.partition(".")[0]
    if package in ("pandas", "datasets"):
        return f"{package}.{cls.__name__}"
    return None


def whole_table(items: object) -> str | None:
    """A message for a whole DataFrame or Dataset given where one column is meant, else None."""
    kind = table_kind(items)
    if kind == "pandas.DataFrame":
        return ("items is a whole DataFrame: pass one column, e.g. df['abstract'] (the results "
                "keep its index)")
    if kind in ("datasets.Dataset", "datasets.IterableDataset"):
        return "items is a whole Dataset: pass one column, e.g. ds['abstract']"
    return None
