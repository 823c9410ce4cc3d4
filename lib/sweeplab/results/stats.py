"""Statistics of sweeps: the trials' values per group (last values of chosen statuses, or every
trial at one iteration) and Welch's t-tests of every group against the best one, Holm- and
Benjamini-Hochberg-corrected, within one sweep or across several of one family."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pandas as pd

from sweeplab.results.sweep import USABLE, SweepError
from sweeplab.results.tables import group_labels, with_columns

if TYPE_CHECKING:
    from sweeplab.results.sweep import Sweep


class MixedBudgetWarning(UserWarning):
    """Values of trials stopped at different budgets are being compared (see :func:`group_values`)."""


def group_values(sweep: Sweep, metric: str | None = None, group_by: Iterable[str] | None = None,
                 include: Iterable[str] = USABLE, at_iteration: int | None = None) -> dict[str, np.ndarray]:
    """The finite values of ``metric`` (default: the job's) per group (``" / "``-joined values
    of ``group_by``; default :meth:`~sweeplab.results.sweep.Sweep.default_group_by`).

    Args:
        include: statuses of the trials whose LAST values count (default
            :data:`~sweeplab.results.sweep.USABLE`, which under an early-stopping scheduler
            mixes budgets: pass ``["completed"]``, or ``at_iteration``).
        at_iteration: instead, every trial's value at this ``training_iteration`` (trials that
            never reached it are left out), so every value has the same budget.
    """
    metric = metric or sweep.metric
    group_by = list(group_by) if group_by else sweep.default_group_by()
    every = with_columns(sweep, sweep.dataframe(), group_by)
    key = pd.DataFrame({g: group_labels(every[g]) for g in group_by}, index=every.index).agg(" / ".join, axis=1)
    if at_iteration is not None:
        df = values_at_iteration(sweep, every, [metric], at_iteration)
    else:
        df = every[every["status"].isin(list(include))]
        if (df["status"] != "completed").any() and df["training_iteration"].nunique() > 1:
            warnings.warn(f"{sweep.spec.name}: {metric} of trials stopped at different budgets "
                          f"({int(df['training_iteration'].min())}-{int(df['training_iteration'].max())} iterations) "
                          "are compared; pass include=['completed'] or at_iteration=N", MixedBudgetWarning,
                          stacklevel=3)
    # every group of the sweep is listed; one whose trials are all left out has no values (n = 0)
    return {k: pd.to_numeric(df.loc[df.index.intersection(key.index[key == k]), metric],
                             errors="coerce").dropna().to_numpy() for k in key.unique()}


def values_at_iteration(sweep: Sweep, df: pd.DataFrame, metrics: Iterable[str], at_iteration: int) -> pd.DataFrame:
    """The rows of ``df`` (trials) that reported at ``training_iteration == at_iteration``, with
    ``metrics`` taken there and ``training_iteration`` set to it.

    Raises:
        SweepError: no trial reached that iteration.
    """
    hist = sweep.history()
    reached = hist[hist["training_iteration"] == at_iteration] if "training_iteration" in hist else hist
    if reached.empty:
        top = int(hist["training_iteration"].max()) if "training_iteration" in hist and len(hist) else 0
        raise SweepError(f"--at-iteration {at_iteration}: no trial of {sweep.path} reached it (the longest ran "
                         f"{top} iterations)")
    at = reached.drop_duplicates("trial_id", keep="last").set_index("trial_id")
    out = df[df["trial_id"].isin(at.index)].copy()
    for m in metrics:
        out[m] = out["trial_id"].map(at[m]) if m in at else np.nan
    out["training_iteration"] = at_iteration
    return out


def mixed_budgets(sweep: Sweep) -> int:
    """How many usable trials ended before their own budget (stopped by a scheduler, or still
    unfinished): averaging their last values with completed trials' mixes budgets."""
    df = sweep.dataframe()
    return int(df["status"].isin([s for s in USABLE if s != "completed"]).sum()) if not df.empty else 0


def welch_against_best(values: dict[str, np.ndarray], mode: str) -> pd.DataFrame:
    """Welch's unequal-variance t-test (``scipy.stats.ttest_ind(equal_var=False)``) of every
    group's values against the best group's: the highest mean for ``mode="max"``, the lowest
    for ``"min"``, among groups of at least 2 values (a group of one value has no spread to
    test against, so it is never the reference unless no group has two).

    Args:
        values: group name -> 1-D array of per-trial values (e.g. one per seed).
        mode: ``"max"`` or ``"min"``.

    Returns:
        One row per other group: ``group``, ``mean``, ``diff`` (group − best), ``t``,
        ``p_value`` (two-sided; NaN when either group has fewer than 2 values), ``p_holm``
        (Holm-adjusted over this table's tests), ``p_bh`` (Benjamini-Hochberg, by
        ``scipy.stats.false_discovery_control``), ``n`` (0 for an empty group) and ``note``
        (why a p-value is missing); ``attrs["best"]`` names the reference group.
    """
    from scipy import stats

    from sweeplab.results.effects import benjamini_hochberg, holm

    means = {k: (v.mean() if len(v) else np.nan) for k, v in values.items()}
    sign = 1.0 if mode == "max" else -1.0
    testable = [k for k, v in values.items() if len(v) >= 2] or list(values)
    best = max(testable, key=lambda k: -np.inf if np.isnan(means[k]) else sign * means[k])
    b = values[best]
    rows = []
    for k, v in values.items():
        if k == best:
            continue
        t, p, note = np.nan, np.nan, ""
        if len(b) < 2:
            note = f"no test: the reference {best!r} has n = {len(b)} (a t-test needs 2 values a group)"
        elif len(v) < 2:
            note = f"no test: n = {len(v)} (a t-test needs 2 values a group)"
        else:
            res = stats.ttest_ind(v, b, equal_var=False)
            t, p = float(res.statistic), float(res.pvalue)
        rows.append({"group": k, "mean": means[k], "diff": means[k] - means[best], "t": t,
                     "p_value": p, "n": len(v), "note": note})
    cols = ["group", "mean", "diff", "t", "p_value", "p_holm", "p_bh", "n", "note"]
    out = pd.DataFrame(rows, columns=[c for c in cols if c not in ("p_holm", "p_bh")])
    out.insert(5, "p_holm", holm(out["p_value"].to_numpy(float)) if len(out) else [])
    out.insert(6, "p_bh", benjamini_hochberg(out["p_value"].to_numpy(float)) if len(out) else [])
    out.attrs["best"] = best
    out.attrs["best_n"] = len(b)
    return out


def compare_sweeps(sweeps: Sequence[Sweep], metric: str | None = None, group_by: Iterable[str] | None = None,
                   pool: bool = False, include: Iterable[str] = USABLE,
                   at_iteration: int | None = None) -> pd.DataFrame:
    """Welch's t-test across several sweeps of one family: every group of every sweep (named
    ``"<sweep name>: <group>"``) against the best of them, e.g. a baseline rerun with seeds
    against a confirmation of a search's winners.

    Args:
        sweeps: loaded sweeps (at least one).
        metric: default: the first sweep's objective.
        group_by: columns to group each sweep on (default: each sweep's own default groups).
        pool: pool groups of the same name across sweeps (named ``"<group>"``), e.g. seeds 0-2
            of two configurations from one sweep and seeds 3-5 from a later one, grouped on a
            hyperparameter that tells the configurations apart.
        include, at_iteration: which trials and values count (see :func:`group_values`).

    Returns:
        As :func:`welch_against_best`.

    Raises:
        SweepError: when the sweeps' families differ or one does not report ``metric``.
    """
    if not sweeps:
        raise SweepError("compare needs at least one sweep")
    metric = metric or sweeps[0].metric
    families = {s.spec.trainable for s in sweeps}
    if len(families) > 1:
        raise SweepError(f"compare: the sweeps train different families ({', '.join(sorted(families))}); "
                         f"their metrics are not comparable")
    values: dict[str, np.ndarray] = {}
    for s in sweeps:
        if metric not in s.metric_names:
            raise SweepError(f"--metric {metric}: {s.spec.trainable} does not report it; choose one of "
                             f"{', '.join(s.metric_names)}")
        label = s.spec.name if sum(x.spec.name == s.spec.name for x in sweeps) == 1 else str(s.path)
        for group, v in group_values(s, metric, group_by, include, at_iteration).items():
            key = group if pool else f"{label}: {group}"
            values[key] = np.concatenate([values[key], v]) if key in values else v
    return welch_against_best(values, sweeps[0].metric_mode(metric))
