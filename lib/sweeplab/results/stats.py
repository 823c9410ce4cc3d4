"""Statistics of sweeps: the usable trials' values per group and Welch's t-tests of every group
against the best one, within one sweep or across several of one family."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pandas as pd

from sweeplab.results.sweep import USABLE, SweepError
from sweeplab.results.tables import group_labels, with_columns

if TYPE_CHECKING:
    from sweeplab.results.sweep import Sweep


def group_values(sweep: Sweep, metric: str | None = None,
                 group_by: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The finite last values of ``metric`` (default: the job's) of the usable trials
    (:data:`~sweeplab.results.sweep.USABLE`), per group (``" / "``-joined values of
    ``group_by``; default :meth:`~sweeplab.results.sweep.Sweep.default_group_by`)."""
    metric = metric or sweep.metric
    group_by = list(group_by) if group_by else sweep.default_group_by()
    df = with_columns(sweep, sweep.dataframe(), group_by)
    df = df[df["status"].isin(USABLE)]
    key = pd.DataFrame({g: group_labels(df[g]) for g in group_by}).agg(" / ".join, axis=1)
    return {k: pd.to_numeric(df.loc[key == k, metric], errors="coerce").dropna().to_numpy()
            for k in key.unique()}


def welch_against_best(values: dict[str, np.ndarray], mode: str) -> pd.DataFrame:
    """Welch's unequal-variance t-test (``scipy.stats.ttest_ind(equal_var=False)``) of every
    group's values against the best group's (highest mean for ``mode="max"``, lowest for
    ``"min"``; a group without values is never best).

    Args:
        values: group name -> 1-D array of per-trial values (e.g. one per seed).
        mode: ``"max"`` or ``"min"``.

    Returns:
        One row per other group: ``group``, ``mean``, ``diff`` (group − best), ``t``,
        ``p_value`` (two-sided; NaN when either group has fewer than 2 values), ``n``;
        ``attrs["best"]`` names the best group.
    """
    from scipy import stats

    means = {k: (v.mean() if len(v) else np.nan) for k, v in values.items()}
    sign = 1.0 if mode == "max" else -1.0
    best = max(means, key=lambda k: -np.inf if np.isnan(means[k]) else sign * means[k])
    rows = []
    for k, v in values.items():
        if k == best:
            continue
        b = values[best]
        if len(v) >= 2 and len(b) >= 2:
            res = stats.ttest_ind(v, b, equal_var=False)
            t, p = float(res.statistic), float(res.pvalue)
        else:
            t, p = np.nan, np.nan
        rows.append({"group": k, "mean": means[k], "diff": means[k] - means[best], "t": t,
                     "p_value": p, "n": len(v)})
    out = pd.DataFrame(rows, columns=["group", "mean", "diff", "t", "p_value", "n"])
    out.attrs["best"] = best
    return out


def compare_sweeps(sweeps: Sequence[Sweep], metric: str | None = None,
                   group_by: Iterable[str] | None = None, pool: bool = False) -> pd.DataFrame:
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
        for group, v in group_values(s, metric, group_by).items():
            key = group if pool else f"{label}: {group}"
            values[key] = np.concatenate([values[key], v]) if key in values else v
    return welch_against_best(values, sweeps[0].metric_mode(metric))
