"""Checks shared by the uncertainty measures: what a matrix of embeddings must be."""

from __future__ import annotations

from typing import Any

try:
    import numpy as np
    import scipy  # noqa: F401  (checked here, used by the clustering)
    from numpy.typing import NDArray
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "aurora_swarm.uq needs numpy and scipy: pip install 'aurora-swarm[uq]'") from exc

__all__ = ["Matrix", "as_matrix", "unit_rows"]

Matrix = NDArray[np.float64]


def as_matrix(value: Any, name: str = "embeddings") -> Matrix:
    """``value`` as a 2-D float array of finite numbers, one row per item."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (one row per answer), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def unit_rows(embeddings: Matrix) -> Matrix:
    """Each row scaled to length 1 (an all-zero row stays zero)."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return np.asarray(embeddings / np.where(norms == 0.0, 1.0, norms), dtype=np.float64)
