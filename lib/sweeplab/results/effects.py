"""The statistics behind verdicts and comparisons: tests of two groups, Hedges' g, a bootstrap
confidence interval of the difference, multiple-comparison corrections, and how many seeds a
difference would need (a power calculation). Every test is SciPy's; the rest is written out here
with its source.

Sources: Hedges & Olkin (1985), *Statistical Methods for Meta-Analysis*, ch. 5 (g and its exact
small-sample correction J); Holm (1979), *Scand. J. Statist.* 6:65-70 (step-down correction);
Benjamini & Hochberg (1995) via ``scipy.stats.false_discovery_control``; Schuirmann (1987) for
the two one-sided tests (TOST) of equivalence; Cohen (1988), *Statistical Power Analysis*, for
power with the noncentral t distribution; Lehmann (1975) for the Mann-Whitney test's asymptotic
relative efficiency 3/pi against the t-test.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: the largest seed count :func:`seeds_needed` searches
MAX_SEEDS = 10_000


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Hedges' g of ``mean(a) - mean(b)``: Cohen's d with the pooled standard deviation (ddof 1),
    times the exact small-sample correction ``J(df) = Γ(df/2) / (sqrt(df/2) Γ((df-1)/2))``,
    ``df = n_a + n_b - 2`` (Hedges & Olkin 1985). NaN with fewer than 2 values in a group or no
    spread at all."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return float("nan")
    df = na + nb - 2
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / df)
    if pooled == 0:
        return float("nan")
    j = math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2)) / math.sqrt(df / 2)
    return float((a.mean() - b.mean()) / pooled * j)


def cohens_dz(a: np.ndarray, b: np.ndarray) -> float:
    """Paired standardized difference ``mean(a - b) / std(a - b, ddof=1)`` (Cohen 1988, d_z):
    the effect size the paired t-test's power depends on. NaN with fewer than 2 pairs or no spread."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) < 2 or d.std(ddof=1) == 0:
        return float("nan")
    return float(d.mean() / d.std(ddof=1))


def two_group_p(a: np.ndarray, b: np.ndarray, test: str, alternative: str, shift: float = 0.0) -> float:
    """p-value of ``mean(a) - mean(b) - shift`` against 0 with ``alternative`` (``"less"``,
    ``"greater"``, ``"two-sided"``): ``welch`` is ``scipy.stats.ttest_ind(equal_var=False)``,
    ``mannwhitney`` ``scipy.stats.mannwhitneyu`` (location shift), ``paired``
    ``scipy.stats.ttest_rel`` on values aligned by seed. NaN with fewer than 2 values a group.

    Raises:
        ValueError: an unknown test, or paired groups of different lengths.
    """
    from scipy import stats

    a, b = np.asarray(a, float) - shift, np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if test == "welch":
        res = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    elif test == "mannwhitney":
        res = stats.mannwhitneyu(a, b, alternative=alternative, method="auto")
    elif test == "paired":
        if len(a) != len(b):
            raise ValueError(f"paired test: {len(a)} and {len(b)} values; pairs need equal lengths")
        res = stats.ttest_rel(a, b, alternative=alternative)
    else:
        raise ValueError(f"unknown test {test!r}; use welch, mannwhitney or paired")
    p = float(res.pvalue)
    return p if math.isfinite(p) else float("nan")


def tost_p(a: np.ndarray, b: np.ndarray, test: str, margin: float) -> float:
    """Two one-sided tests (Schuirmann 1987) of equivalence ``|mean(a) - mean(b)| < margin``:
    the larger of the p-values of ``diff > -margin`` and ``diff < margin``. Small means
    equivalent within the margin."""
    lower = two_group_p(a, b, test, "greater", shift=-margin)
    upper = two_group_p(a, b, test, "less", shift=margin)
    return max(lower, upper)


def bootstrap_diff_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95, paired: bool = False,
                      seed: int = 0, n_resamples: int = 9999) -> tuple[float, float]:
    """Bootstrap confidence interval of ``mean(a) - mean(b)`` (``scipy.stats.bootstrap``, BCa;
    the percentile interval where BCa is undefined, e.g. identical resamples). ``paired``
    resamples pairs (``a[i], b[i]``) together. Seeded: the same data give the same interval.

    Returns:
        ``(low, high)``; NaNs with fewer than 2 values in a group.
    """
    import warnings

    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")

    def diff(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    low = high = float("nan")
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():  # BCa on few, tied values warns and returns NaN: fall back
            warnings.simplefilter("ignore")
            res = stats.bootstrap((a, b), diff, paired=paired, vectorized=True, confidence_level=level,
                                  n_resamples=n_resamples, method=method, rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    return low, high


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): sort the m p-values ascending, multiply
    the i-th (0-based) by ``m - i``, take the running maximum, cap at 1. NaN entries (tests not
    run) are left NaN and do not count in m. Reject where adjusted p < α: the family-wise error
    rate stays at α whatever the dependence between the tests."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if idx.size == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), by
    ``scipy.stats.false_discovery_control``; NaN entries stay NaN and do not count."""
    from scipy import stats

    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def _power(ns: np.ndarray, effect: float, alpha: float, design: str, margin_ncp: tuple | None = None) -> np.ndarray:
    """Power of a one-sided t-test at level ``alpha`` for n per group ``ns`` (``design``:
    ``two_sample`` df 2n-2, ncp effect*sqrt(n/2); ``paired`` df n-1, ncp effect*sqrt(n)).
    ``margin_ncp=(d_low, d_high)``: the TOST's power, both one-sided tests rejecting,
    approximated by ``P1 + P2 - 1`` (Cohen 1988; Schuirmann 1987)."""
    from scipy import stats

    if design == "paired":
        df, scale = ns - 1.0, np.sqrt(ns)
    else:
        df, scale = 2.0 * ns - 2.0, np.sqrt(ns / 2.0)
    crit = stats.t.isf(alpha, df)
    if margin_ncp is None:
        return stats.nct.sf(crit, df, abs(effect) * scale)
    p1 = stats.nct.sf(crit, df, margin_ncp[0] * scale)
    p2 = stats.nct.sf(crit, df, margin_ncp[1] * scale)
    return np.clip(p1 + p2 - 1.0, 0.0, 1.0)


def seeds_needed(effect: float, alpha: float, power: float = 0.8, test: str = "welch",
                 margin: float | None = None) -> int | None:
    """Seeds a group (pairs for ``paired``) that a one-sided test at ``alpha`` needs to detect a
    standardized ``effect`` with probability ``power`` (noncentral t, Cohen 1988): e.g. 51 a
    group for d = 0.5, α = 0.05, power 0.8. ``mannwhitney`` needs the t-test's n divided by
    its asymptotic relative efficiency 3/π (Lehmann 1975). With ``margin`` (also
    standardized), the seeds for two one-sided tests to show ``|diff| < margin`` when the true
    standardized difference is ``effect``.

    Returns:
        The smallest n (≥ 2), or None when no n up to :data:`MAX_SEEDS` suffices (an effect of
        0, or, for equivalence, an observed difference at or beyond the margin).
    """
    if not math.isfinite(effect) or (margin is None and effect == 0):
        return None
    if margin is not None and abs(effect) >= margin:
        return None
    ns = np.arange(2, MAX_SEEDS + 1, dtype=float)
    design = "paired" if test == "paired" else "two_sample"
    ncp = None if margin is None else (margin + effect, margin - effect)
    reach = np.flatnonzero(_power(ns, effect, alpha, design, ncp) >= power)
    if reach.size == 0:
        return None
    n = int(ns[reach[0]])
    if test == "mannwhitney":
        n = math.ceil(n * math.pi / 3)
    return n
