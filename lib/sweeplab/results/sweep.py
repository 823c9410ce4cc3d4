"""A sweep folder read back: one row per trial, learning curves, statuses, ranking, best trial.

:class:`Sweep` reads Ray Tune's own experiment state and per-trial results through
``ray.tune.ExperimentAnalysis`` (no Ray cluster needed) and the job saved beside them. Tables,
statistics, plots and follow-up jobs are in the sibling modules (:mod:`~sweeplab.results.tables`,
:mod:`~sweeplab.results.stats`, :mod:`~sweeplab.results.plots`, :mod:`~sweeplab.results.jobs`);
:class:`Sweep` keeps them as methods.

Two things are decided here for every trial:

* **Status** (:data:`STATUSES`): a trial that ended normally is ``completed`` when it reached its
  *own* budget, the family's ``num_iterations_of`` its own config (so a searched ``epochs`` or
  ``steps`` counts), capped by ASHA's ``max_t`` when the job sets one; it is ``stopped`` (by
  ASHA) when it ended before.
* **Metric names**: a sweep written before a metric was renamed loads with the current names;
  the family's ``renamed`` map (old name -> new) is applied to each trial's last result and to
  its history's columns.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import pandas as pd

from sweeplab.results.views import SweepViews
from sweeplab.runner.folder import SweepError, locate_sweep, read_job

if TYPE_CHECKING:
    from sweeplab.spec import JobSpec

#: Trial statuses shown in tables.
STATUSES = ("completed", "stopped", "diverged", "error", "unfinished", "cancelled")
#: statuses whose metrics are ranked and averaged (diverged/errored/cancelled trials never are)
USABLE = ("completed", "stopped", "unfinished")
#: facts of the run copied from a trial's last result into its row, when reported
_EXTRAS = ("num_params", "train_seconds", "node")


# -- legacy metric names ------------------------------------------------------------------------
def _target(name: str, present: Iterable[str], renamed: Mapping[str, str]) -> str | None:
    """The current name of ``name``; None when its new name is reported as well (the current
    value wins) and is not itself an old name being renamed away."""
    new = renamed.get(name)
    if new is None:
        return name
    if new in present and new not in renamed:
        return None
    return new


def rename_result(result: Mapping[str, Any], renamed: Mapping[str, str]) -> dict[str, Any]:
    """One reported result with old metric names replaced by the current ones.

    Args:
        result: a trial's result (e.g. Ray's ``last_result``).
        renamed: old name -> current name (a family's :attr:`~sweeplab.kit.family.ModelFamily.renamed`);
            all names are mapped at once, so ``{"loss": "test_loss", "test_loss": "test_elbo"}``
            maps an old ``test_loss`` to ``test_elbo`` and an old ``loss`` to ``test_loss``.

    Returns:
        A new dict; a key reported under both its old and its current name keeps the current one.
    """
    out: dict[str, Any] = {}
    for key, value in result.items():
        new = _target(key, result, renamed)
        if new is not None:
            out[new] = value
    return out


def rename_columns(frame: pd.DataFrame, renamed: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` (e.g. a trial's history) with old metric column names replaced by the current
    ones, as :func:`rename_result` does for one result."""
    columns = set(frame.columns)
    drop = [c for c in frame.columns if _target(c, columns, renamed) is None]
    mapping = {c: renamed[c] for c in frame.columns if c in renamed and c not in drop}
    return frame.drop(columns=drop).rename(columns=mapping) if drop or mapping else frame


# -- statuses -----------------------------------------------------------------------------------
def trial_status(ray_status: str, last: Mapping[str, Any], budget: int) -> str:
    """The :data:`STATUSES` label of one trial.

    Args:
        ray_status: Ray Tune's status of the trial (``TERMINATED``, ``ERROR``, ``RUNNING`` ...).
        last: its last result (metric names as reported; only ``diverged`` and
            ``training_iteration`` are read).
        budget: the iterations the trial runs when nothing stops it (see :meth:`Sweep.trial_budget`).
    """
    if last.get("diverged"):
        return "diverged"
    if ray_status == "ERROR":
        return "error"
    if ray_status == "TERMINATED" and not last.get("training_iteration"):
        return "cancelled"  # ended before its first result (e.g. search.time_budget_s ran out)
    if ray_status == "TERMINATED":
        return "completed" if last.get("training_iteration", 0) >= budget else "stopped"
    if ray_status == "PAUSED" and last.get("training_iteration", 0) >= budget:
        return "completed"  # Ray's HyperBand may pause a trial at its last rung, after its last iteration
    return "unfinished"


class Sweep(SweepViews):
    """One sweep folder (verdicts, the Pareto front, picks, trained models and the
    reproducibility record: :class:`~sweeplab.results.views.SweepViews`).

    Args:
        path: the sweep folder (``<storage>/<name>``) or a URI.

    Raises:
        SweepError: the folder holds no sweep, or no trial has started yet.
    """

    def __init__(self, path: str) -> None:
        from ray.tune import ExperimentAnalysis

        from sweeplab.kit.family import get_family

        self.path = path
        self.spec: JobSpec = read_job(path)
        #: the family class (:class:`~sweeplab.kit.family.ModelFamily`) the sweep trained
        self.family = get_family(self.spec.trainable)
        #: the (first) objective and its mode; a multi-objective job's all: ``spec.objectives()``
        self.metric = self.spec.primary_metric  # an objective named before a rename: the spec maps it
        self.mode = self.spec.resolved_mode()
        try:
            self._ea = ExperimentAnalysis(path, default_metric=self.metric, default_mode=self.mode)
        except (ValueError, FileNotFoundError) as exc:
            raise SweepError(f"{path}: no trial results yet ({exc})") from None
        self._last = {t.trial_id: rename_result(t.last_result or {}, self.family.renamed)
                      for t in self._ea.trials}
        self._budgets: dict[str, int] = {}

    # -- what the sweep varied and measured -------------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        """The hyperparameters that vary in this sweep (search space and variant keys)."""
        names = list(self.spec.search.space)
        for var in self.spec.search.variants:
            names += [k for k in var if k != "name" and k not in names]
        return names

    @property
    def metric_names(self) -> list[str]:
        """The metrics the family reports, in its declared order (without the loop's own
        ``iteration_seconds``, ``train_seconds`` and ``diverged``)."""
        return [m.name for m in self.family.metrics]

    def metric_mode(self, metric: str | None = None) -> str:
        """``"max"`` or ``"min"``: the job's mode for its objective, else the family's declared
        mode of ``metric``. A metric declared without a better direction (``mode=None``, e.g.
        ``current_lr``) ranks as ``"min"``.

        Raises:
            SweepError: ``metric`` is not one the family or the loop reports.
        """
        metric = metric or self.metric
        if metric in self.spec.objectives():
            return self.spec.resolved_modes()[self.spec.objectives().index(metric)]
        table = self.family.metric_table()
        if metric not in table:
            raise SweepError(f"metric {metric!r}: {self.spec.trainable} does not report it; choose "
                             f"one of {', '.join(table)}")
        return table[metric].mode or "min"

    def trial_configs(self) -> dict[str, dict[str, Any]]:
        """Every trial's config as Ray Tune handed it over (``train`` values merged with the
        sampled ones), by trial id."""
        return {t.trial_id: t.config for t in self._ea.trials}

    def trial_budget(self, trial_id: str) -> int:
        """The iterations trial ``trial_id`` runs when nothing stops it: the family's
        ``num_iterations_of`` the trial's own config (``epochs`` or ``steps`` may be searched),
        capped by ASHA's ``max_t`` when the job sets one. A config that no longer validates (a
        sweep of an older version of the family) counts with the job's ``max_iterations()``."""
        if trial_id not in self._budgets:
            from sweeplab.kit.loop import trial_config

            try:
                budget = self.family.num_iterations_of(
                    trial_config(self.family, self.trial_configs()[trial_id]))
            except (ValueError, TypeError, AttributeError):
                budget = self.spec.max_iterations()
            sched = self.spec.scheduler
            if sched.type in ("asha", "hyperband") and sched.max_t:
                budget = min(budget, sched.max_t)
            self._budgets[trial_id] = budget
        return self._budgets[trial_id]

    # -- raw data ---------------------------------------------------------------------------------
    def dataframe(self) -> pd.DataFrame:
        """One row per trial.

        Columns: ``trial_id``, ``status`` (one of :data:`STATUSES`), ``variant`` (grid variants),
        the varied hyperparameters (or ``config``, the job's name, when nothing is varied),
        ``seed``, ``training_iteration``, every reported metric of the trial's LAST result,
        ``num_params``, ``train_seconds``, ``node``, ``path`` (the trial folder).
        """
        df = pd.DataFrame([self._row(trial) for trial in self._ea.trials])
        if not df.empty and self.metric in df:
            df = df.sort_values(self.metric, ascending=self.mode == "min", na_position="last")
        return df.reset_index(drop=True)

    def _row(self, trial: Any) -> dict[str, Any]:
        last = self._last[trial.trial_id]
        status = trial_status(getattr(trial, "status", ""), last, self.trial_budget(trial.trial_id))
        row: dict[str, Any] = {"trial_id": trial.trial_id, "status": status}
        if self.spec.search.variants:
            row["variant"] = trial.config.get("variant")
        elif not self.param_names:  # one configuration (run once per seed): name it
            row["config"] = self.spec.name
        for p in self.param_names:
            row[p] = trial.config.get(p)
        row["seed"] = last.get("seed")
        row["training_iteration"] = last.get("training_iteration", 0)
        for m in self.metric_names:
            row[m] = last.get(m, np.nan)
        row.update({extra: last[extra] for extra in _EXTRAS if extra in last})
        row["path"] = trial.path
        return row

    def history(self) -> pd.DataFrame:
        """Every reported result of every trial (one row per trial and iteration, the latest
        when a resumed trial repeated an iteration), with a ``trial_id`` column and current
        metric names: learning curves for plots."""
        ids = {t.trial_id for t in self._ea.trials}
        by_path = {t.path: t.trial_id for t in self._ea.trials}
        frames = []
        for key, frame in self._ea.trial_dataframes.items():  # keyed by trial id (by path before Ray 2.7)
            frame = rename_columns(frame.copy(), self.family.renamed)
            frame["trial_id"] = key if key in ids else by_path.get(key, Path(key).name)
            if "training_iteration" in frame:
                # a trial resumed from a checkpoint older than its last report repeats those
                # iterations; the re-run's row is the one its later results build on
                frame = frame.drop_duplicates("training_iteration", keep="last")
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # -- best -------------------------------------------------------------------------------------
    def ranked(self, metric: str | None = None, mode: str | None = None) -> pd.DataFrame:
        """Trials that did not diverge or error and have a finite last ``metric`` (default: the
        job's), best first by ``mode`` (default: :meth:`metric_mode`).

        Raises:
            SweepError: when no trial has a finite value of the metric.
        """
        metric = metric or self.metric
        mode = mode or self.metric_mode(metric)
        df = self.dataframe()
        ok = df[df["status"].isin(USABLE)] if not df.empty else df
        if not ok.empty:
            values = pd.to_numeric(ok.get(metric, pd.Series(np.nan, index=ok.index)), errors="coerce")
            ok = ok[np.isfinite(values)]
        if ok.empty:
            raise SweepError(f"{self.path}: no trial has a finite {metric!r} yet")
        return ok.sort_values(metric, ascending=mode == "min", kind="stable")

    def best_trial(self, metric: str | None = None, mode: str | None = None) -> pd.Series:
        """The row of the best trial by its last reported ``metric`` (default: the job's),
        among trials that did not diverge or error.

        Raises:
            SweepError: when no trial has a finite value of the metric.
        """
        return self.ranked(metric, mode).iloc[0]

    def best_config(self, metric: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """The best trial's full hyperparameters (fixed ``train`` values, sampled values and
        its ``seed``), as a plain dict that the family's Config accepts.

        Raises:
            SweepError: when no trial has a finite value of the metric.
        """
        row = self.best_trial(metric, mode)
        config = self.trial_configs()[row["trial_id"]]
        config = {k: v for k, v in config.items() if not k.startswith("__") and k != "variant"}
        if row.get("seed") is not None and not pd.isna(row.get("seed")):
            config["seed"] = int(row["seed"])
        return config

    def default_group_by(self) -> list[str]:
        """``variant`` when the grid has variants, else every varied hyperparameter, else
        ``config`` (one configuration run once per seed: a single mean ± std row)."""
        if self.spec.search.variants:
            return ["variant"]
        return self.param_names or ["config"]

    # -- jobs, tables, statistics, plots (see the sibling modules) --------------------------------
    def best_job(self, metric: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """A complete job (YAML-ready dict) that re-runs the best config once, no search
        (:func:`sweeplab.results.jobs.best_job`)."""
        from sweeplab.results import jobs

        return jobs.best_job(self, metric, mode)

    def confirm_job(self, top: int = 3, repeats: int = 3, metric: str | None = None,
                    mode: str | None = None) -> dict[str, Any]:
        """A job (YAML-ready dict) that reruns the ``top`` best trials' configurations with
        ``repeats`` fresh seeds each, without ASHA (:func:`sweeplab.results.jobs.confirm_job`).

        Raises:
            SweepError: for ``top`` or ``repeats`` < 1, or when no trial has a finite metric.
        """
        from sweeplab.results import jobs

        return jobs.confirm_job(self, top, repeats, metric, mode)

    def summary(self, group_by: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
                include: Iterable[str] = USABLE, at_iteration: int | None = None) -> pd.DataFrame:
        """Mean, std (ddof=1) and n of each metric per group, with ``iterations``, ``trials``
        and ``excluded``; ``attrs["mixed_budgets"]`` says when the means mix budgets
        (:func:`sweeplab.results.tables.summary`).

        Raises:
            SweepError: a metric the trials did not report, or an unknown group column.
        """
        from sweeplab.results import tables

        return tables.summary(self, group_by, metrics, include, at_iteration)

    def table(self, group_by: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
              fmt: str = "markdown", digits: int = 4, status: Iterable[str] | None = None,
              at_iteration: int | None = None) -> str:
        """The sweep as a printable table: one row per trial, or with ``group_by`` one row per
        group with ``mean ± std`` and ``n`` (:func:`sweeplab.results.tables.table`).

        Raises:
            SweepError: unknown format, group column or status.
        """
        from sweeplab.results import tables

        return tables.table(self, group_by, metrics, fmt, digits, status, at_iteration)

    def group_values(self, metric: str | None = None, group_by: Iterable[str] | None = None,
                     include: Iterable[str] = USABLE, at_iteration: int | None = None) -> dict[str, np.ndarray]:
        """The finite values of ``metric`` per group: last values of the ``include`` statuses,
        or every trial's at ``at_iteration`` (:func:`sweeplab.results.stats.group_values`)."""
        from sweeplab.results import stats

        return stats.group_values(self, metric, group_by, include, at_iteration)

    def compare(self, metric: str | None = None, group_by: Iterable[str] | None = None,
                include: Iterable[str] = USABLE, at_iteration: int | None = None) -> pd.DataFrame:
        """Welch's t-test (scipy) of each group against the best group (of at least 2 values)
        on ``metric``, Holm- and BH-corrected (:func:`sweeplab.results.stats.welch_against_best`).

        Returns:
            A frame with one row per other group: ``group``, ``mean``, ``diff`` (group − best),
            ``t``, ``p_value`` (two-sided), ``p_holm``, ``p_bh``, ``n``, ``note``. With fewer
            than 2 trials in a group the test is undefined: ``p_value`` is NaN and ``note``
            says why.
        """
        from sweeplab.results import stats

        return stats.welch_against_best(stats.group_values(self, metric, group_by, include, at_iteration),
                                        self.metric_mode(metric))

    def to_optuna_study(self, metric: str | None = None, at_iteration: int | None = None):
        """The sweep as an in-memory Optuna study (:func:`sweeplab.results.plots.to_optuna_study`).

        Raises:
            SweepError: no search space, or no trial reached ``at_iteration``.
        """
        from sweeplab.results import plots

        return plots.to_optuna_study(self, metric, at_iteration)

    def plot(self, out_dir: str | Path, metric: str | None = None,
             at_iteration: int | None = None) -> list[Path]:
        """Write ``curves.png`` and, with a search space, Optuna's figures into ``out_dir``
        (:func:`sweeplab.results.plots.plot`); returns the paths written.

        Raises:
            SweepError: from :meth:`to_optuna_study`.
        """
        from sweeplab.results import plots

        return plots.plot(self, out_dir, metric, at_iteration)


def load_sweep(path: str | Path, storage_path: str | None = None) -> Sweep:
    """Open a sweep by folder, URI or name (looked up under ``storage_path`` /
    ``$SWEEPLAB_STORAGE`` / ``./sweeps``).

    Raises:
        SweepError: nothing there holds a sweep.
    """
    return Sweep(locate_sweep(str(path), storage_path))
