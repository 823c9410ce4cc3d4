"""Several objectives at once: the Pareto front of a sweep's trials, and picking one trial by a
rule such as "the smallest model within 0.5 % of the best accuracy".

A trial *dominates* another when it is at least as good on every objective and strictly better
on one; the Pareto front is the set of trials no other trial dominates (Deb 2001,
*Multi-Objective Optimization using Evolutionary Algorithms*, ch. 2). Only completed trials
count: a trial stopped early has values from a shorter run.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from sweeplab.results.sweep import SweepError

if TYPE_CHECKING:
    from sweeplab.results.sweep import Sweep

_PICK = re.compile(r"^\s*(min|max)\s+(\w+)(?:\s+within\s+([0-9.eE+-]+)\s*(%?)\s+of\s+(\w+))?\s*$")


def pareto_mask(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Which rows of ``values`` (``[n_trials, n_objectives]``) are on the Pareto front.

    Args:
        values: finite objective values, one row per trial.
        modes: ``"min"`` or ``"max"`` per column.

    Returns:
        A boolean array of length ``n_trials``; duplicates of a front point are all on it.
    """
    v = np.asarray(values, float)
    if v.ndim != 2 or v.shape[1] != len(modes):
        raise ValueError(f"values of shape {v.shape} for {len(modes)} objectives")
    signed = v * np.array([1.0 if m == "min" else -1.0 for m in modes])  # everything minimised
    no_worse = (signed[:, None, :] <= signed[None, :, :]).all(axis=2)  # [j, i]: j no worse than i
    better = (signed[:, None, :] < signed[None, :, :]).any(axis=2)
    dominated = (no_worse & better).any(axis=0)
    return ~dominated


def pareto_front(sweep: Sweep, metrics: Sequence[str] | None = None,
                 modes: Sequence[str] | None = None) -> pd.DataFrame:
    """The completed trials on the Pareto front of ``metrics`` (default: the job's objectives),
    sorted by the first; rows as :meth:`~sweeplab.results.sweep.Sweep.dataframe`.

    Raises:
        SweepError: fewer than two objectives, an unknown metric, or no completed trial with
            finite values of them all.
    """
    metrics = list(metrics or sweep.spec.objectives())
    if len(metrics) < 2:
        raise SweepError(f"{sweep.path}: a Pareto front needs two or more objectives; the job optimises "
                         f"{metrics[0]} only (list several in the job's metric: [...], or pass metrics=[...] from Python)")
    modes = list(modes or [sweep.metric_mode(m) for m in metrics])
    df = sweep.dataframe()
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise SweepError(f"{sweep.path}: the trials did not report {', '.join(missing)}")
    ok = df[df["status"] == "completed"].copy()
    values = ok[metrics].apply(pd.to_numeric, errors="coerce")
    ok = ok[np.isfinite(values.to_numpy(float)).all(axis=1)]
    if ok.empty:
        raise SweepError(f"{sweep.path}: no completed trial has finite {', '.join(metrics)}")
    front = ok[pareto_mask(ok[metrics].to_numpy(float), modes)]
    return front.sort_values(metrics[0], ascending=modes[0] == "min", kind="stable").reset_index(drop=True)


def parse_pick(rule: str) -> tuple[str, str, float | None, bool, str | None]:
    """Parse ``"min num_params within 0.5% of val_accuracy"`` into ``(mode, metric, tolerance,
    relative, reference)``; the ``within ... of ...`` part is optional.

    Raises:
        SweepError: the rule does not have that form.
    """
    m = _PICK.match(rule)
    if not m:
        raise SweepError(f"--pick {rule!r}: write it as 'min|max METRIC [within TOL[%] of METRIC]', e.g. "
                         "'min num_params within 0.5% of val_accuracy'")
    mode, metric, tol, pct, ref = m.groups()
    if tol is not None:
        try:
            tolerance = float(tol)
        except ValueError:
            raise SweepError(f"--pick {rule!r}: {tol!r} is not a number") from None
        if tolerance < 0:
            raise SweepError(f"--pick {rule!r}: the tolerance must be >= 0")
        return mode, metric, tolerance, pct == "%", ref
    return mode, metric, None, False, None


def pick(sweep: Sweep, rule: str) -> pd.Series:
    """The trial a rule picks among the completed trials: ``"min num_params within 0.5% of
    val_accuracy"`` keeps the trials whose ``val_accuracy`` is within 0.5 % (of the best value;
    without ``%`` an absolute tolerance in the metric's unit) of the best by its mode, then
    takes the one with the smallest ``num_params`` (ties: the better reference value).

    Raises:
        SweepError: a malformed rule, a metric the trials did not report, or no candidate.
    """
    mode, metric, tol, relative, ref = parse_pick(rule)
    df = sweep.dataframe()
    for name in filter(None, (metric, ref)):
        if name not in df.columns:
            raise SweepError(f"--pick {rule!r}: the trials did not report {name!r}; choose from "
                             f"{', '.join(sweep.metric_names)}")
    cand = df[df["status"] == "completed"]
    cand = cand[np.isfinite(pd.to_numeric(cand[metric], errors="coerce").astype(float))]
    if ref is not None:
        ref_values = pd.to_numeric(cand[ref], errors="coerce").astype(float)
        cand, ref_values = cand[np.isfinite(ref_values)], ref_values[np.isfinite(ref_values)]
        if cand.empty:
            raise SweepError(f"--pick {rule!r}: no completed trial has finite {metric} and {ref}")
        ref_mode = sweep.metric_mode(ref)
        best = ref_values.max() if ref_mode == "max" else ref_values.min()
        allowed = tol * abs(best) if relative else tol
        cand = cand[(ref_values - best).abs() <= allowed + 1e-12 * max(1.0, abs(best))]
        cand = cand.sort_values(ref, ascending=ref_mode == "min", kind="stable")
    if cand.empty:
        raise SweepError(f"--pick {rule!r}: no completed trial with a finite {metric}")
    return cand.sort_values(metric, ascending=mode == "min", kind="stable").iloc[0]
