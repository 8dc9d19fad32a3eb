"""Semantic entropy: the entropy of the meanings among sampled answers.

Answers whose embeddings are close in cosine similarity share a meaning. They are grouped by
agglomerative clustering, and the entropy ``H = -sum_c p_c ln p_c`` is taken over the share
``p_c`` of answers in each cluster ``c``.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from ._arrays import Matrix, as_matrix, unit_rows

__all__ = ["cluster_embeddings", "semantic_entropy"]

_METHODS = frozenset({"single", "complete", "average", "weighted"})


def cluster_embeddings(
    embeddings: Matrix,
    similarity_threshold: float = 0.9,
    method: str = "average",
) -> np.ndarray:
    """Group answers by meaning: one cluster label (1, 2, ...) per row of ``embeddings``.

    Parameters
    ----------
    embeddings:
        Shape ``(n, d)``, one row per answer.
    similarity_threshold:
        Answers (or clusters, under the linkage ``method``) whose cosine similarity is at
        least this share a meaning; the tree is cut at distance ``1 - similarity_threshold``.
    method:
        The linkage: ``"average"`` (default), ``"single"``, ``"complete"`` or ``"weighted"``.

    Returns
    -------
    numpy.ndarray
        Integer labels, shape ``(n,)``; equal labels share a meaning.

    Examples
    --------
    >>> import numpy as np
    >>> from aurora_swarm.uq import cluster_embeddings
    >>> cluster_embeddings(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.05]])).tolist()
    [1, 2, 1]
    """
    x = as_matrix(embeddings)
    if not -1.0 <= similarity_threshold <= 1.0:
        raise ValueError(f"similarity_threshold must be in [-1, 1], got {similarity_threshold}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    n = x.shape[0]
    if n <= 1:
        return np.ones(n, dtype=np.int64)
    unit = unit_rows(x)
    distance = 1.0 - np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method=method)
    # A hair above the cut keeps pairs exactly at the threshold together despite rounding.
    labels = fcluster(tree, t=1.0 - similarity_threshold + 1e-12, criterion="distance")
    return np.asarray(labels, dtype=np.int64)


def semantic_entropy(
    embeddings: Matrix,
    similarity_threshold: float = 0.9,
    linkage_method: str = "average",
) -> float:
    """The entropy, in nats, of the meanings among sampled answers.

    Parameters
    ----------
    embeddings:
        Shape ``(n, d)``, one row per sampled answer to the same question.
    similarity_threshold:
        Cosine similarity at which answers share a meaning (see :func:`cluster_embeddings`).
    linkage_method:
        The linkage of the clustering.

    Returns
    -------
    float
        ``0.0`` when all answers mean the same (or ``n <= 1``); ``ln n`` when all differ.

    Examples
    --------
    Three answers in two meanings (2 + 1): ``-(2/3 ln 2/3 + 1/3 ln 1/3)``.

    >>> import numpy as np
    >>> from aurora_swarm.uq import semantic_entropy
    >>> round(semantic_entropy(np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])), 4)
    0.6365
    """
    labels = cluster_embeddings(embeddings, similarity_threshold, linkage_method)
    if labels.size <= 1:
        return 0.0
    _, counts = np.unique(labels, return_counts=True)
    shares = counts / labels.size
    return float(-np.sum(shares * np.log(shares))) + 0.0  # + 0.0: one meaning is 0.0, not -0.0
