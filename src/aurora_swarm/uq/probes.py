"""Semantic-entropy probes: predict semantic entropy from one hidden state.

A ridge regression from a model's hidden state (e.g. the last layer at the last prompt token)
to the semantic entropy measured with many samples. Once trained, one forward pass estimates
the uncertainty without sampling.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ._arrays import Matrix, as_matrix

__all__ = ["load_probe", "predict_semantic_entropy", "save_probe", "train_probe"]


def train_probe(
    hidden_states: Matrix, target_entropy: Any, ridge_alpha: float = 1.0
) -> tuple[np.ndarray, float]:
    """Fit ``entropy ~ hidden_state @ coef + intercept`` by ridge regression.

    The intercept is not penalized (the data are centered first), so it is the mean entropy
    when every coefficient is shrunk to zero.

    Parameters
    ----------
    hidden_states:
        Shape ``(n, d)``, one row per training question.
    target_entropy:
        Shape ``(n,)``, the semantic entropy measured for each question.
    ridge_alpha:
        The L2 penalty on ``coef`` (``>= 0``; ``0`` is least squares).

    Returns
    -------
    tuple of (numpy.ndarray, float)
        ``(coef, intercept)``, ``coef`` of shape ``(d,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from aurora_swarm.uq import train_probe
    >>> coef, intercept = train_probe(np.array([[0.0], [1.0], [2.0]]), [1.0, 3.0, 5.0], 0.0)
    >>> round(float(coef[0]), 6), round(intercept, 6)
    (2.0, 1.0)
    """
    x = as_matrix(hidden_states, "hidden_states")
    y = np.asarray(target_entropy, dtype=np.float64).ravel()
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} hidden states but {y.shape[0]} target entropies")
    if x.shape[0] == 0:
        raise ValueError("no training rows")
    if not ridge_alpha >= 0:
        raise ValueError(f"ridge_alpha must be >= 0, got {ridge_alpha}")
    x_mean, y_mean = x.mean(axis=0), float(y.mean())
    xc, yc = x - x_mean, y - y_mean
    n, d = xc.shape
    if ridge_alpha == 0:
        coef = np.linalg.lstsq(xc, yc, rcond=None)[0]
    elif d <= n:  # the primal system is d x d
        coef = np.linalg.solve(xc.T @ xc + ridge_alpha * np.eye(d), xc.T @ yc)
    else:  # more features than rows (hidden states): the dual system is n x n
        coef = xc.T @ np.linalg.solve(xc @ xc.T + ridge_alpha * np.eye(n), yc)
    coef = np.asarray(coef, dtype=np.float64)
    return coef, float(y_mean - x_mean @ coef)


def predict_semantic_entropy(hidden_states: Any, coef: Any, intercept: float) -> np.ndarray:
    """The probe's estimate for each row of ``hidden_states`` (shape ``(n,)``; ``(1,)`` for one
    1-D state)."""
    x = np.asarray(hidden_states, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    weights = np.asarray(coef, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[1] != weights.shape[0]:
        raise ValueError(f"hidden states of shape {x.shape} do not match a probe of "
                         f"{weights.shape[0]} features")
    return np.asarray(x @ weights + float(intercept), dtype=np.float64)


def _metadata_path(path: str | os.PathLike[str]) -> str:
    return os.fspath(path) + ".json"


def save_probe(path: str | os.PathLike[str], coef: Any, intercept: float,
               metadata: dict[str, Any] | None = None) -> None:
    """Write a probe to ``path`` (a ``.npz`` file), and ``metadata`` beside it as JSON.

    The metadata file is ``path`` with ``.json`` appended (``probe.npz.json``). Missing parent
    folders are made.
    """
    name = os.fspath(path)
    if not name.endswith(".npz"):
        raise ValueError(f"a probe is saved as .npz; got {name!r}")
    os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
    np.savez(name, coef=np.asarray(coef, dtype=np.float64), intercept=np.float64(intercept))
    if metadata is not None:
        with open(_metadata_path(name), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2)


def load_probe(path: str | os.PathLike[str]) -> tuple[np.ndarray, float, dict[str, Any] | None]:
    """Read a probe written by :func:`save_probe`: ``(coef, intercept, metadata or None)``.

    Examples
    --------
    >>> import tempfile, os
    >>> from aurora_swarm.uq import load_probe, save_probe
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "probe.npz")
    ...     save_probe(path, [0.5, -1.0], 0.25, {"layer": 30})
    ...     coef, intercept, meta = load_probe(path)
    >>> coef.tolist(), intercept, meta
    ([0.5, -1.0], 0.25, {'layer': 30})
    """
    with np.load(os.fspath(path), allow_pickle=False) as data:
        coef = np.asarray(data["coef"], dtype=np.float64)
        intercept = float(data["intercept"])
    metadata = None
    if os.path.exists(_metadata_path(path)):
        with open(_metadata_path(path), encoding="utf-8") as handle:
            metadata = json.load(handle)
    return coef, intercept, metadata
