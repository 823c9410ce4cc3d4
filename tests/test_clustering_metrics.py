"""Clustering metrics of shared/specs/variational_mnist.md on cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sweeplab.metrics.clustering import active_clusters, cluster_accuracy, conjugation_r2, nmi
from sweeplab.models.variational_mnist import ConjugatedMixture

torch.set_num_threads(1)


def labels(n_per_class: int = 50, n_classes: int = 10) -> np.ndarray:
    return np.repeat(np.arange(n_classes), n_per_class)


def test_perfect_and_permuted_clusterings_score_one():
    y = labels()
    assert nmi(y, y) == pytest.approx(1.0)
    assert cluster_accuracy(y, y) == 1.0
    perm = np.random.default_rng(0).permutation(10)
    renamed = perm[y] + 7  # other cluster ids, other order
    assert nmi(y, renamed) == pytest.approx(1.0)
    assert cluster_accuracy(y, renamed) == 1.0
    assert active_clusters(renamed) == 10
    # torch tensors work too
    assert nmi(torch.as_tensor(y), torch.as_tensor(renamed)) == pytest.approx(1.0)


def test_overclustering_keeps_accuracy_but_lowers_nmi():
    y = labels()
    split = y * 2 + (np.arange(len(y)) % 2)  # every class split into two clusters
    assert cluster_accuracy(y, split) == 1.0
    assert 0.7 < nmi(y, split) < 1.0
    assert active_clusters(split, n_clusters=20) == 20


def test_random_assignments_score_near_chance():
    y = labels(500)
    c = np.random.default_rng(1).integers(0, 10, len(y))
    assert nmi(y, c) < 0.02
    assert cluster_accuracy(y, c) < 0.16  # chance is about 0.1 (+ the majority-vote bonus)


def test_known_partial_clustering():
    y = np.array([0, 0, 0, 1, 1, 1])
    c = np.array([0, 0, 1, 1, 1, 1])  # cluster 1 holds one 0 and three 1s
    assert cluster_accuracy(y, c) == pytest.approx(5 / 6)
    assert active_clusters(c) == 2
    # a single cluster: no information
    assert nmi(y, np.zeros(6, int)) == pytest.approx(0.0)
    assert cluster_accuracy(y, np.zeros(6, int)) == pytest.approx(0.5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        nmi([0, 1], [0])
    with pytest.raises(ValueError, match="1-D"):
        cluster_accuracy(np.zeros((2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="0..2"):
        active_clusters([0, 3], n_clusters=3)
    with pytest.raises(ValueError, match="same length"):
        conjugation_r2([1.0, 2.0], [1.0])


def test_r2_definition_and_clipping():
    rng = np.random.default_rng(0)
    psi = rng.normal(size=5000) * 3.0
    noise = rng.normal(size=5000)
    # f = rho·y - psi with psi = rho·y + noise  ->  f = -noise
    r2 = conjugation_r2(-noise, psi)
    assert r2 == pytest.approx(1 - noise.var() / psi.var())
    assert conjugation_r2(psi * 10, psi) == -10.0  # clipped
    assert conjugation_r2(np.zeros(4), np.ones(4)) == 1.0
    assert conjugation_r2(np.arange(4.0), np.ones(4)) == -10.0


def test_r2_is_one_for_an_exactly_conjugate_model():
    """Each latent drives one pixel of its own, so ψ_X(η(y)) = c + Σ_j y_j·n·(softplus(θ + w_j) −
    softplus(θ)) is linear in y; with ρ equal to that slope, f is constant and R² = 1."""
    D, L = 6, 4
    m = ConjugatedMixture(D, L, 3, interaction="hierarchical", n_trials=16).double()
    theta, w = 0.2, torch.tensor([2.0, -1.0, 0.5, 1.5], dtype=torch.float64)
    with torch.no_grad():
        m.theta_x.fill_(theta)
        m.w.zero_()
        m.w[torch.arange(L), torch.arange(L)] = w
        m.theta_y.copy_(torch.tensor([0.0, 1.0, -1.0, 0.3]))
        sp = torch.nn.functional.softplus
        m.rho.copy_(16 * (sp(theta + w) - sp(torch.tensor(theta, dtype=torch.float64))))
    f, psi = m.conjugation_samples(3000, torch.Generator().manual_seed(0))
    assert psi.var() > 1.0
    assert conjugation_r2(f, psi) == pytest.approx(1.0, abs=1e-9)
    with torch.no_grad():
        m.rho.mul_(0.5)  # half the slope: a quarter of the variance is left
    f, psi = m.conjugation_samples(3000, torch.Generator().manual_seed(0))
    assert conjugation_r2(f, psi) == pytest.approx(0.75, abs=0.03)
