"""Uncertainty of a model's answers, from the embeddings of several sampled answers.

Sample ``S`` answers per question (e.g. :func:`~aurora_swarm.patterns.broadcast` with a sampling
temperature), embed them (:class:`~aurora_swarm.EmbeddingPool`), then measure how much they
disagree in meaning:

- :func:`semantic_entropy`: cluster the answers by meaning and take the entropy of the
  clusters' shares (Kuhn, Gal and Farquhar, 2023);
- :func:`kernel_language_entropy`: the von Neumann entropy of the answers' similarity kernel,
  which also sees how far apart the clusters are (Nikitin et al., 2024);
- semantic-entropy probes (:func:`train_probe`, :func:`predict_semantic_entropy`,
  :func:`save_probe`, :func:`load_probe`): a linear map from one hidden state to the semantic
  entropy, so one forward pass estimates what ``S`` samples measure (Kossen et al., 2024).

Needs the ``uq`` extra (``pip install 'aurora-swarm[uq]'``: numpy and scipy).

Examples
--------
Four answers, two meanings, two answers each: the entropy is ``ln 2``.

>>> import numpy as np
>>> from aurora_swarm.uq import semantic_entropy
>>> answers = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
>>> round(semantic_entropy(answers), 4), round(float(np.log(2)), 4)
(0.6931, 0.6931)

.. versionadded:: 0.1.0
"""

from . import _arrays  # noqa: F401  (first: says which extra to install when numpy is missing)
from .kle import kernel_language_entropy
from .probes import load_probe, predict_semantic_entropy, save_probe, train_probe
from .semantic_entropy import cluster_embeddings, semantic_entropy

__all__ = [
    "cluster_embeddings",
    "kernel_language_entropy",
    "load_probe",
    "predict_semantic_entropy",
    "save_probe",
    "semantic_entropy",
    "train_probe",
]
