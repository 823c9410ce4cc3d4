"""Sample-quality metrics (``sweeplab.metrics.samples``) on inputs with known answers: true samples
reach the ceiling, samples of 3 of 10 components give 3 modes and a large mode KL, a generator of
one digit covers one class; KLs and Fréchet distances against SciPy and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2, entropy

from sweeplab.datasets.synthetic import gmm3d
from sweeplab.metrics import samples as sm


def draw(means, weights, n, seed=0, components=None):
    """``n`` points of the unit-variance mixture, optionally only from ``components``."""
    rng = np.random.default_rng(seed)
    w = np.asarray(weights, float)
    if components is not None:
        w = np.where(np.isin(np.arange(len(w)), components), w, 0.0)
        w = w / w.sum()
    c = rng.choice(len(w), size=n, p=w)
    return means[c] + rng.standard_normal((n, means.shape[1])), c


@pytest.mark.parametrize("data_seed", [0, 3])
def test_true_samples_reach_the_ceiling(data_seed):
    b = gmm3d(data_seed=data_seed)
    m, w = b.meta["means"], b.meta["weights"]
    x, _ = draw(m, w, 2500, seed=1)
    out = sm.mode_metrics(x, m, w)
    # inside 3 sigma of its own mean: P(chi2_3 <= 9) = 0.9707; overlaps only raise the share
    assert 0.96 <= out["hq_fraction"] <= 1.0
    assert out["modes_captured"] == out["modes_covered"] == 10
    assert out["mode_kl"] < 0.02
    assert np.allclose(sm.spread_ratios(x, b.x_train), 1.0, atol=0.08)


def test_three_of_ten_components_give_three_modes_and_a_large_kl():
    rng = np.random.default_rng(0)
    means = rng.uniform(-20, 20, size=(10, 3))   # well separated: nearest mean = own mean
    w = np.full(10, 0.1)
    x, _ = draw(means, w, 2000, components=[0, 4, 7])
    out = sm.mode_metrics(x, means, w)
    assert out["modes_captured"] == out["modes_covered"] == 3
    # KL of a histogram on 3 equal bins to the uniform 10: log(10/3)
    assert out["mode_kl"] == pytest.approx(math.log(10 / 3), abs=0.02)
    assert out["mode_kl"] > 1.0


def test_coverage_threshold_and_hq_radius_are_the_specs():
    means = np.array([[0.0, 0, 0], [50, 0, 0], [0, 50, 0], [0, 0, 50]])
    w = np.full(4, 0.25)
    n = 1000
    need = math.ceil(0.1 * chi2.cdf(9, 3) * n * 0.25)           # 25 (0.9707 * 25 = 24.27 -> 25)
    x = np.zeros((n, 3))
    x[:need] = means[0]
    x[need:2 * need - 1] = means[1]                               # one short of the threshold
    x[2 * need - 1:] = means[2] + [2.99, 0, 0]                    # within 3 sigma
    x[-5:] = means[3] + [0, 0, 3.01]                              # outside: not high quality
    out = sm.mode_metrics(x, means, w, sigma=1.0, tau=0.1)
    assert out["modes_captured"] == 3 and out["modes_covered"] == 2
    assert out["hq_fraction"] == pytest.approx((n - 5) / n)


def test_histogram_kl_matches_scipy():
    counts = np.array([5.0, 1.0, 4.0])
    target = np.array([0.2, 0.5, 0.3])
    assert sm.histogram_kl(counts, target, eps=0.0) == pytest.approx(entropy(counts / 10, target))


def test_elbow_finds_four_separated_blobs_and_four_or_five_on_the_true_mixture():
    rng = np.random.default_rng(0)
    blobs = np.repeat(np.array([[0, 0, 0], [30, 0, 0], [0, 30, 0], [0, 0, 30]]), 100, axis=0)
    assert sm.elbow_k(blobs + rng.standard_normal(blobs.shape)) == 4
    b = gmm3d(data_seed=0)
    # the spec's calibration: the elbow rule says 3-6 (mostly 4-5) on the true 10 components
    assert 3 <= sm.elbow_k(b.x_train) <= 6


def test_class_coverage_and_kl_of_a_one_digit_generator():
    prior = np.full(10, 0.1)
    one = np.full(1000, 7)
    assert sm.class_coverage(one, 10) == 1
    assert sm.class_kl(one, prior) == pytest.approx(math.log(10), abs=1e-3)
    balanced = np.arange(1000) % 10
    assert sm.class_coverage(balanced, 10) == 10 and sm.class_kl(balanced, prior) == pytest.approx(0, abs=1e-9)
    # 1 % rule: a class with 9 of 1000 samples is not covered, one with 10 is
    labels = np.r_[np.zeros(981), np.ones(10), np.full(9, 2)].astype(int)
    assert sm.class_coverage(labels, 3) == 2
    skew = np.r_[np.zeros(700), np.ones(300)].astype(int)
    assert sm.class_kl(skew, [0.5, 0.5], eps=0) == pytest.approx(entropy([0.7, 0.3], [0.5, 0.5]))


def test_frechet_distance_closed_forms():
    assert sm.frechet_distance([1.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx((1 - 3) ** 2 + (2 - 1) ** 2)
    s1, s2 = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])
    mu = np.array([1.0, -1.0, 0.5])
    assert sm.frechet_distance(mu, np.diag(s1 ** 2), 0 * mu, np.diag(s2 ** 2)) == pytest.approx(
        (mu ** 2).sum() + ((s1 - s2) ** 2).sum())
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 4)) @ rng.standard_normal((4, 4))
    m, c = sm.gaussian_stats(a)
    assert sm.frechet_distance(m, c, m, c) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="frechet_distance"):
        sm.frechet_distance(m, c, m[:2], c[:2, :2])
