"""Sample-quality metrics shared by every generative family: generated samples judged against the
true data, each with a *ceiling* (the value true samples get) computed the same way.

Two kinds of data, two sets of metrics:

* **A Gaussian mixture with known means and weights** (``gmm3d``, ``../shared/specs/gmm_vae.md``
  §3.2): VEEGAN's high-quality share and modes captured (Srivastava et al., NeurIPS 2017, §5),
  the spec's ``modes_covered@τ`` (reported as ``modes_covered_0p1`` for τ = 0.1), the KL of the
  mode histogram (Metz et al. 2017 apply it to stacked MNIST), the spread ratio and the report's
  own elbow count (k-means inertia + Kneedle, Satopää et al. 2011).
* **Labelled images** (MNIST-like, ``../shared/specs/ann_course.md`` §8): a fixed reference
  classifier (:mod:`sweeplab.metrics.reference_classifier`) labels the samples; from its labels
  :func:`class_coverage` and :func:`class_kl`, from its features :func:`frechet_distance` (the
  Fréchet distance of Heusel et al. 2017 in *that classifier's* feature space, not Inception's:
  its values are not comparable with published FIDs).

Everything here is NumPy/SciPy/scikit-learn on arrays; nothing trains.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

#: Radius of a "high-quality" sample, in units of the components' sigma (VEEGAN's 3 sigma).
HQ_RADIUS = 3.0
#: Smoothing added to every bin of a histogram before a KL divergence.
KL_EPS = 1e-6


# -- Gaussian mixtures -------------------------------------------------------------------------------
def nearest_means(samples: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and Euclidean distance to the nearest mean of every sample.

    Args:
        samples: ``[n, D]`` points.
        means: ``[K, D]`` component means.

    Returns:
        ``(index int64 [n], distance float64 [n])``.
    """
    x = np.asarray(samples, dtype=np.float64)
    m = np.asarray(means, dtype=np.float64)
    d2 = ((x[:, None, :] - m[None, :, :]) ** 2).sum(-1)
    idx = d2.argmin(axis=1)
    return idx.astype(np.int64), np.sqrt(d2[np.arange(len(x)), idx])


def histogram_kl(counts: np.ndarray, target: np.ndarray, eps: float = KL_EPS) -> float:
    """KL(q̂ ‖ p) in nats of the histogram ``counts`` (normalised to q̂) to the distribution
    ``target``, both smoothed by ``eps`` per bin and renormalised (an empty histogram becomes
    uniform).

    Args:
        counts: ``[K]`` non-negative counts.
        target: ``[K]`` probabilities (or counts; normalised here).
    """
    q = np.asarray(counts, dtype=np.float64)
    p = np.asarray(target, dtype=np.float64)
    q = q / q.sum() if q.sum() > 0 else np.full_like(q, 1.0 / len(q))
    q, p = q + eps, p / p.sum() + eps
    q, p = q / q.sum(), p / p.sum()
    return float(np.sum(q * np.log(q / p)))


def mode_metrics(samples: np.ndarray, means: np.ndarray, weights: np.ndarray, *, sigma: float = 1.0,
                 tau: float = 0.1) -> dict[str, float]:
    """VEEGAN's mode counts and the spec's coverage and mode KL of samples from a generator of a
    mixture of spherical Gaussians.

    Source: ``../shared/specs/gmm_vae.md`` §3.2. A sample is *high quality* when it lies within
    ``3 sigma`` of its nearest true mean.

    Args:
        samples: ``[n, D]`` generated points, in the data's original space.
        means: ``[K, D]`` true means. weights: ``[K]`` true mixing weights (sum 1).
        sigma: the components' standard deviation.
        tau: share of a component's expected high-quality count that covers it.

    Returns:
        ``hq_fraction`` (fraction of samples within 3 sigma of their nearest mean);
        ``modes_captured`` (count of means nearest to at least one high-quality sample);
        ``modes_covered`` (count of components whose high-quality count ``n_k`` reaches
        ``max(1, ceil(tau * P(chi2_D <= 9) * n * w_k))``; ``P(chi2_3 <= 9) = 0.9707``);
        ``mode_kl`` (nats, :func:`histogram_kl` of the high-quality samples' nearest-mean
        histogram to ``weights``).

    Raises:
        ValueError: samples and means of different dimension, or no samples.
    """
    from scipy.stats import chi2

    x, m, w = np.asarray(samples), np.asarray(means), np.asarray(weights, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or x.shape[1] != m.shape[1]:
        raise ValueError(f"mode_metrics: samples {x.shape} must be [n>0, D] with D = {m.shape[1]} (the means')")
    idx, dist = nearest_means(x, m)
    hq = dist <= HQ_RADIUS * sigma
    counts = np.bincount(idx[hq], minlength=len(m)).astype(np.float64)
    inside = chi2.cdf(HQ_RADIUS ** 2, df=m.shape[1])
    need = np.maximum(1.0, np.ceil(tau * inside * len(x) * w - 1e-9))
    return {"hq_fraction": float(hq.mean()), "modes_captured": float((counts > 0).sum()),
            "modes_covered": float((counts >= need).sum()), "mode_kl": histogram_kl(counts, w)}


def spread_ratios(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``std_j(samples) / std_j(reference)`` per dimension ``j`` (the report's "spread and
    variability ... lower"; ``../shared/specs/gmm_vae.md`` §3.2).

    Args:
        samples: ``[n, D]`` generated points. reference: ``[m, D]`` true points.

    Returns:
        ``float64 [D]`` ratios (1 for a generator with the data's spread).
    """
    return np.asarray(samples, np.float64).std(axis=0) / np.asarray(reference, np.float64).std(axis=0)


def elbow_k(samples: np.ndarray, k_max: int = 15, n_init: int = 10, seed: int = 0) -> int:
    """The report's elbow count: k-means (``n_init`` restarts) for ``k = 1..k_max``, the knee at
    the global maximum of the Kneedle difference curve (Satopää et al. 2011): the distance of the
    min-max normalised inertia curve below the chord from ``k = 1`` to ``k = k_max``.

    Source: ``../shared/specs/gmm_vae.md`` §3.2 (which shows it gives 4-5 on the true 10-component
    mixture: it measures the report's claim, not mode recovery).

    Args:
        samples: ``[n, D]`` points (``n >= k_max``).
        k_max: largest k tried (>= 3). n_init: k-means restarts. seed: k-means seed.

    Raises:
        ValueError: fewer samples than ``k_max`` or ``k_max < 3``.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(samples, dtype=np.float64)
    if k_max < 3 or len(x) < k_max:
        raise ValueError(f"elbow_k needs k_max >= 3 and at least k_max samples (k_max={k_max}, n={len(x)})")
    ks = np.arange(1, k_max + 1)
    inertia = np.array([KMeans(int(k), n_init=n_init, random_state=seed).fit(x).inertia_ for k in ks])
    span = inertia[0] - inertia[-1]
    if span <= 0:
        return 1
    y = (inertia - inertia[-1]) / span          # 1 at k = 1, 0 at k = k_max
    t = (ks - 1) / (k_max - 1)                  # 0 .. 1
    return int(ks[np.argmax((1.0 - t) - y)])


# -- labelled images through a reference classifier ------------------------------------------------
def class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``float64 [C]`` share of ``labels`` (ints ``0..C-1``) in each class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    return counts / max(1, counts.sum())


def class_coverage(labels: np.ndarray, num_classes: int, min_share: float = 0.01) -> int:
    """Number of classes holding at least ``min_share`` of the samples (1 % by default):
    ``../shared/specs/ann_course.md`` §8. A generator that draws one digit gets 1."""
    return int((class_histogram(labels, num_classes) >= min_share).sum())


def class_kl(labels: np.ndarray, prior: np.ndarray, eps: float = KL_EPS) -> float:
    """KL(q̂ ‖ p) in nats of the samples' class histogram q̂ to the data's class shares ``prior``
    ``[C]`` (:func:`histogram_kl`; 0 for a generator with the data's class balance, ``log C``
    for one that draws a single class of a balanced ``C``-class data set)."""
    p = np.asarray(prior, dtype=np.float64)
    return histogram_kl(np.bincount(np.asarray(labels, np.int64), minlength=len(p))[:len(p)], p, eps)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` (float64) of ``features [n, F]``, n >= 2."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance² between N(mu1, cov1) and N(mu2, cov2):
    ``||mu1 - mu2||² + Tr(cov1 + cov2 - 2 (cov1 cov2)^{1/2})`` (Heusel et al. 2017, as FID computes
    it, with ``scipy.linalg.sqrtm``). In squared feature units; 0 for equal Gaussians.

    Raises:
        ValueError: shapes that do not match.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"frechet_distance: means {mu1.shape}, {mu2.shape} and covariances {cov1.shape}, "
                         f"{cov2.shape} must be [F] and [F, F]")
    with warnings.catch_warnings():  # a singular product (e.g. dead features) is handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():  # FID's usual offset on the diagonals
            offset = np.eye(len(mu1)) * 1e-6
            covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = np.real(covmean)
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))
    return max(value, 0.0) if math.isfinite(value) else value
