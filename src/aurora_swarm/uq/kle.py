"""Kernel language entropy: the von Neumann entropy of the answers' similarity kernel.

A positive semi-definite kernel ``K`` over the answers' embeddings, scaled to unit trace, is a
density matrix ``rho = K / tr K``; its entropy ``-tr(rho ln rho) = -sum_i l_i ln l_i`` over its
eigenvalues ``l_i`` is ``0`` when all answers are alike and ``ln n`` when all are orthogonal,
and it grows smoothly in between (semantic entropy only counts clusters).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import Matrix, as_matrix, unit_rows

__all__ = [
    "density_matrix_from_kernel",
    "kernel_language_entropy",
    "kernel_matrix",
    "von_neumann_entropy",
]


def kernel_matrix(embeddings: Matrix, kernel: str = "cosine", **kwargs: Any) -> Matrix:
    """The ``(n, n)`` kernel of the answers' embeddings.

    Parameters
    ----------
    embeddings:
        Shape ``(n, d)``.
    kernel:
        ``"cosine"`` (Gram matrix of the unit-length rows) or ``"rbf"``
        (``exp(-gamma * |x_i - x_j|^2)``, ``gamma`` defaulting to ``1 / d``).
    **kwargs:
        ``gamma=`` for ``"rbf"``.

    Examples
    --------
    >>> import numpy as np
    >>> from aurora_swarm.uq.kle import kernel_matrix
    >>> kernel_matrix(np.array([[2.0, 0.0], [1.0, 1.0]])).round(4).tolist()
    [[1.0, 0.7071], [0.7071, 1.0]]
    """
    x = as_matrix(embeddings)
    if kernel == "cosine":
        if kwargs:
            raise TypeError(f"the cosine kernel takes no options, got {sorted(kwargs)}")
        unit = unit_rows(x)
        return np.asarray(np.clip(unit @ unit.T, -1.0, 1.0), dtype=np.float64)
    if kernel == "rbf":
        gamma = kwargs.pop("gamma", None)
        if kwargs:
            raise TypeError(f"the rbf kernel takes only gamma=, got {sorted(kwargs)}")
        gamma = 1.0 / max(x.shape[1], 1) if gamma is None else float(gamma)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        squared = np.sum(x * x, axis=1)
        distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * (x @ x.T), 0.0)
        return np.asarray(np.exp(-gamma * distances), dtype=np.float64)
    raise ValueError(f"kernel must be 'cosine' or 'rbf', got {kernel!r}")


def density_matrix_from_kernel(kernel: Matrix) -> Matrix:
    """``K / tr(K)``: a density matrix (unit trace) from a square kernel."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"the kernel must be a square matrix, got shape {k.shape}")
    trace = float(np.trace(k))
    if not trace > 0:
        raise ValueError(f"the kernel's trace is {trace}: all embeddings are zero?")
    return np.asarray(k / trace, dtype=np.float64)


def von_neumann_entropy(rho: Matrix, eps: float = 1e-10) -> float:
    """``-sum_i l_i ln l_i`` over the eigenvalues ``l_i`` of the density matrix ``rho``.

    Eigenvalues below ``eps`` (rounding noise around zero) count as zero.

    Examples
    --------
    >>> import numpy as np
    >>> from aurora_swarm.uq.kle import von_neumann_entropy
    >>> round(von_neumann_entropy(np.diag([0.5, 0.5])), 4)
    0.6931
    """
    values = np.linalg.eigvalsh(np.asarray(rho, dtype=np.float64))
    values = values[values > eps]
    if values.size == 0:
        return 0.0
    values = values / values.sum()
    return float(max(0.0, -np.sum(values * np.log(values))))


def kernel_language_entropy(embeddings: Matrix, kernel: str = "cosine",
                            **kernel_kwargs: Any) -> float:
    """The kernel language entropy, in nats, of sampled answers' embeddings.

    Parameters
    ----------
    embeddings:
        Shape ``(n, d)``, one row per sampled answer.
    kernel:
        ``"cosine"`` or ``"rbf"`` (see :func:`~aurora_swarm.uq.kle.kernel_matrix`).
    **kernel_kwargs:
        Options of the kernel (``gamma=`` for ``"rbf"``).

    Returns
    -------
    float
        ``0.0`` for ``n <= 1`` or identical answers; ``ln n`` for mutually orthogonal ones.

    Examples
    --------
    Two answers at cosine similarity ``c`` have eigenvalues ``(1 +- c) / 2``:

    >>> import numpy as np
    >>> from aurora_swarm.uq import kernel_language_entropy
    >>> round(kernel_language_entropy(np.array([[1.0, 0.0], [0.6, 0.8]])), 4)  # c = 0.6
    0.5004
    """
    x = as_matrix(embeddings)
    if x.shape[0] <= 1:
        return 0.0
    return von_neumann_entropy(density_matrix_from_kernel(
        kernel_matrix(x, kernel, **kernel_kwargs)))
