"""aurora_swarm.uq against values computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("scipy")

from aurora_swarm.uq import (  # noqa: E402
    cluster_embeddings,
    kernel_language_entropy,
    load_probe,
    predict_semantic_entropy,
    save_probe,
    semantic_entropy,
    train_probe,
)
from aurora_swarm.uq.kle import (  # noqa: E402
    density_matrix_from_kernel,
    kernel_matrix,
    von_neumann_entropy,
)

E1, E2, E3 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def h(*shares: float) -> float:
    return -sum(p * math.log(p) for p in shares)


@pytest.mark.parametrize(("rows", "expected"), [
    ([E1], 0.0),
    ([E1, E1, [2.0, 0.0, 0.0]], 0.0),  # one meaning (length does not matter)
    ([E1, E2], math.log(2)),
    ([E1, E1, E2, E3], h(0.5, 0.25, 0.25)),  # 1.0397...
    ([E1, E2, E3, [0.0, 0.0, 5.0], [0.0, 1.0, 0.01]], h(0.2, 0.4, 0.4)),
])
def test_semantic_entropy_hand_computed(rows: list[list[float]], expected: float) -> None:
    assert semantic_entropy(np.array(rows)) == pytest.approx(expected, abs=1e-12)


def test_threshold_decides_what_shares_a_meaning() -> None:
    # cos(E1, [1, 1, 0]) = 0.7071: the same meaning at threshold 0.7, not at 0.75.
    rows = np.array([E1, [1.0, 1.0, 0.0]])
    assert cluster_embeddings(rows, similarity_threshold=0.7).tolist() == [1, 1]
    assert sorted(cluster_embeddings(rows, similarity_threshold=0.75).tolist()) == [1, 2]
    assert semantic_entropy(rows, similarity_threshold=0.75) == pytest.approx(math.log(2))
    assert cluster_embeddings(np.zeros((0, 3))).tolist() == []


@pytest.mark.parametrize(("rows", "expected"), [
    ([E1], 0.0),
    ([E1, E1], 0.0),
    ([E1, E2], math.log(2)),
    ([E1, E2, E3], math.log(3)),
    ([[1.0, 0.0], [0.6, 0.8]], h(0.8, 0.2)),  # cos = 0.6: eigenvalues (1 +- 0.6) / 2
])
def test_kernel_language_entropy_hand_computed(rows: list[list[float]], expected: float) -> None:
    assert kernel_language_entropy(np.array(rows)) == pytest.approx(expected, abs=1e-9)


def test_rbf_kernel_and_density_matrix() -> None:
    # |x1 - x2|^2 = 2, gamma = 1/2: off-diagonal exp(-1); eigenvalues (1 +- e^-1) / 2.
    rows = np.array([[1.0, 0.0], [0.0, 1.0]])
    k = kernel_matrix(rows, "rbf")
    assert k[0, 1] == pytest.approx(math.exp(-1.0)) and k[0, 0] == 1.0
    expected = h((1 + math.exp(-1)) / 2, (1 - math.exp(-1)) / 2)
    assert kernel_language_entropy(rows, kernel="rbf") == pytest.approx(expected)
    assert kernel_language_entropy(rows, kernel="rbf", gamma=1e6) == pytest.approx(math.log(2))
    rho = density_matrix_from_kernel(np.array([[2.0, 1.0], [1.0, 2.0]]))
    assert np.trace(rho) == pytest.approx(1.0) and rho[0, 1] == pytest.approx(0.25)
    assert von_neumann_entropy(np.diag([0.3, 0.7])) == pytest.approx(h(0.3, 0.7))


@pytest.mark.parametrize(("call", "message"), [
    (lambda: semantic_entropy(np.array([1.0, 2.0])), "must be 2-D"),
    (lambda: semantic_entropy(np.array([[np.nan, 1.0]])), "NaN"),
    (lambda: semantic_entropy(np.eye(2), linkage_method="ward"), "method must be"),
    (lambda: kernel_language_entropy(np.eye(2), kernel="poly"), "kernel must be"),
    (lambda: kernel_language_entropy(np.zeros((2, 2))), "trace is 0.0"),
    (lambda: train_probe(np.eye(3), [1.0, 2.0]), "3 hidden states but 2"),
    (lambda: train_probe(np.eye(2), [1.0, 2.0], ridge_alpha=-1), "ridge_alpha"),
    (lambda: predict_semantic_entropy(np.eye(2), [1.0, 2.0, 3.0], 0.0), "do not match"),
])
def test_bad_input_is_refused_clearly(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_probe_hand_computed() -> None:
    x = np.array([[0.0], [1.0], [2.0]])
    y = [1.0, 3.0, 5.0]
    coef, intercept = train_probe(x, y, ridge_alpha=0.0)
    assert (coef.tolist(), intercept) == (pytest.approx([2.0]), pytest.approx(1.0))
    # alpha = 1 on centered data: coef = (xc . yc) / (xc . xc + 1) = 4 / 3; the intercept is
    # not penalized: 3 - 1 * 4/3.
    coef, intercept = train_probe(x, y, ridge_alpha=1.0)
    assert (coef.tolist(), intercept) == (pytest.approx([4 / 3]), pytest.approx(5 / 3))
    assert predict_semantic_entropy([3.0], coef, intercept).tolist() == pytest.approx([17 / 3])


def test_probe_with_more_features_than_rows_matches_the_primal_solution() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 40)), rng.normal(size=5)
    coef, intercept = train_probe(x, y, ridge_alpha=0.5)
    xc, yc = x - x.mean(0), y - y.mean()
    primal = np.linalg.solve(xc.T @ xc + 0.5 * np.eye(40), xc.T @ yc)
    assert np.allclose(coef, primal) and intercept == pytest.approx(y.mean() - x.mean(0) @ primal)


def test_probe_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "probes" / "layer30.npz"
    save_probe(path, np.array([1.0, -0.5]), 0.3, metadata={"layer": 30})
    coef, intercept, meta = load_probe(path)
    assert coef.tolist() == [1.0, -0.5] and intercept == 0.3 and meta == {"layer": 30}
    save_probe(tmp_path / "bare.npz", [2.0], 0.0)
    assert load_probe(tmp_path / "bare.npz")[2] is None
    with pytest.raises(ValueError, match=r"\.npz"):
        save_probe(tmp_path / "probe.bin", [1.0], 0.0)
