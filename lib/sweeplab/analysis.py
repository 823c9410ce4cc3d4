"""Reading a finished (or interrupted) sweep: tables, best config, statistics.

``load_sweep(path)`` works on any sweep folder ``sweeplab run`` wrote, local or ``s3://``; it
reads Ray Tune's own experiment state and per-trial results through
``ray.tune.ExperimentAnalysis`` (no Ray cluster needed) and the job saved beside them.

Example::

    from sweeplab import load_sweep
    s = load_sweep("sweeps/fashion_cnn")
    s.dataframe()                      # one row per trial: status, params, last metrics
    s.best_config()                    # the best trial's full config
    print(s.table(group_by=["norm"]))  # mean ± std over trials of each group
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from sweeplab.runner import SweepError, locate_sweep, read_job
from sweeplab.spec import JobSpec

#: Trial statuses shown in tables.
STATUSES = ("completed", "stopped", "diverged", "error", "unfinished", "cancelled")
#: statuses whose metrics are ranked and averaged (diverged/errored/cancelled trials never are)
USABLE = ("completed", "stopped", "unfinished")

_FORMATS = ("markdown", "csv", "latex", "html")


class Sweep:
    """One sweep folder.

    Args:
        path: the sweep folder (``<storage>/<name>``) or a URI.

    Raises:
        SweepError: the folder holds no sweep, or no trial has started yet.
    """

    def __init__(self, path: str) -> None:
        from ray.tune import ExperimentAnalysis

        self.path = path
        self.spec: JobSpec = read_job(path)
        self.metric = self.spec.metric
        self.mode = self.spec.resolved_mode()
        try:
            self._ea = ExperimentAnalysis(path, default_metric=self.metric, default_mode=self.mode)
        except (ValueError, FileNotFoundError) as exc:
            raise SweepError(f"{path}: no trial results yet ({exc})") from None

    # -- raw data ---------------------------------------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        """The hyperparameters that vary in this sweep (search space and variant keys)."""
        names = list(self.spec.search.space)
        for var in self.spec.search.variants:
            names += [k for k in var if k != "name" and k not in names]
        return names

    @property
    def metric_names(self) -> list[str]:
        """The metrics the family reports, in its declared order."""
        return list(self.spec.family().metrics)

    def dataframe(self) -> pd.DataFrame:
        """One row per trial.

        Columns: ``trial_id``, ``status`` (one of :data:`STATUSES`), ``variant`` (grid variants),
        the varied hyperparameters (or ``config``, the job's name, when nothing is varied),
        ``seed``, ``training_iteration``, every reported metric of the trial's LAST result, ``train_seconds``, ``node``, ``path`` (the trial folder).
        """
        rows = []
        max_t = self.spec.max_iterations()
        for trial in self._ea.trials:
            last = trial.last_result or {}
            row: dict[str, Any] = {"trial_id": trial.trial_id, "status": _status(trial, last, max_t)}
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
            for extra in ("num_params", "train_seconds", "node"):
                if extra in last:
                    row[extra] = last[extra]
            row["path"] = trial.path
            rows.append(row)
        df = pd.DataFrame(rows)
        if not df.empty and self.metric in df:
            df = df.sort_values(self.metric, ascending=self.mode == "min", na_position="last")
        return df.reset_index(drop=True)

    def history(self) -> pd.DataFrame:
        """Every reported result of every trial (one row per trial and iteration, the latest
        when a resumed trial repeated an iteration), with a ``trial_id`` column: learning
        curves for plots."""
        frames = []
        for trial_path, frame in self._ea.trial_dataframes.items():
            frame = frame.copy()
            trial = next((t for t in self._ea.trials if t.path == trial_path), None)
            frame["trial_id"] = trial.trial_id if trial else Path(trial_path).name
            if "training_iteration" in frame:
                # a trial resumed from a checkpoint older than its last report repeats those
                # iterations; the re-run's row is the one its later results build on
                frame = frame.drop_duplicates("training_iteration", keep="last")
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # -- best ----------------------------------------------------------------------------------------
    def ranked(self, metric: str | None = None, mode: str | None = None) -> pd.DataFrame:
        """Trials that did not diverge or error and have a finite last ``metric`` (default: the
        job's), best first (the row order of :meth:`dataframe`).

        Raises:
            SweepError: when no trial has a finite value of the metric.
        """
        metric = metric or self.metric
        mode = mode or (self.mode if metric == self.metric else self.spec.family().metrics[metric][0])
        df = self.dataframe()
        ok = df[df["status"].isin(USABLE)] if not df.empty else df
        ok = ok[np.isfinite(pd.to_numeric(ok.get(metric, pd.Series(dtype=float)), errors="coerce"))] \
            if not ok.empty else ok
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
        trial = next(t for t in self._ea.trials if t.trial_id == row["trial_id"])
        config = {k: v for k, v in trial.config.items() if not k.startswith("__") and k != "variant"}
        if row.get("seed") is not None and not pd.isna(row.get("seed")):
            config["seed"] = int(row["seed"])
        return config

    def best_job(self, metric: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """A complete job (YAML-ready dict) that re-runs the best config once, no search."""
        job = self.spec.model_dump(mode="json", exclude_defaults=False)
        job["name"] = f"{self.spec.name}-best"
        job["train"] = self.best_config(metric, mode)
        job["search"] = {"sampler": "grid", "seed": self.spec.search.seed}
        job["scheduler"] = {"type": "none"}
        job["repeats"] = 1
        return job

    def confirm_job(self, top: int = 3, repeats: int = 3, metric: str | None = None,
                    mode: str | None = None) -> dict[str, Any]:
        """A job (YAML-ready dict) that reruns the ``top`` best trials' configurations with
        ``repeats`` fresh seeds each: the second stage of a search, before a result is quoted.

        A sweep's best single trial is partly its lucky seed (the winner's curse: the maximum
        of noisy scores overestimates the configuration's mean), so its configurations are rerun
        as named grid variants (``trial_<id>``: the trial's varied hyperparameters), each on
        seeds the sweep never used (from one above its largest seed), without ASHA. ``sweeplab
        table`` then gives each configuration's mean ± std and ``sweeplab compare`` Welch's
        t-tests between them.

        Args:
            top: configurations to rerun (best first; fewer when the sweep has fewer usable trials).
            repeats: seeds per configuration (≥ 1).
            metric, mode: ranking (default: the job's objective).

        Raises:
            SweepError: for ``top`` or ``repeats`` < 1, or when no trial has a finite metric.
        """
        if top < 1 or repeats < 1:
            raise SweepError(f"--top and --repeats must be >= 1 (got {top} and {repeats})")
        rows = self.ranked(metric, mode).head(top)
        trials = {t.trial_id: t for t in self._ea.trials}
        variants = []
        for _, row in rows.iterrows():
            config = trials[row["trial_id"]].config
            variants.append({"name": f"trial_{row['trial_id']}",
                             **{p: config[p] for p in self.param_names if config.get(p) is not None}})
        seeds = pd.to_numeric(self.dataframe().get("seed", pd.Series(dtype=float)), errors="coerce")
        base_seed = int(self.spec.train.get("seed", 0) or 0)
        next_seed = int(seeds.max()) + 1 if seeds.notna().any() else base_seed + 1
        job = self.spec.model_dump(mode="json", exclude_defaults=False)
        job["name"] = f"{self.spec.name}-confirm"
        job["description"] = (f"the {len(variants)} best configurations of {self.spec.name} by "
                              f"{metric or self.metric}, {repeats} fresh seeds each")
        job["train"] = {**self.spec.train, "seed": next_seed}
        job["search"] = {"sampler": "grid", "seed": self.spec.search.seed, "variants": variants,
                         "max_concurrent": self.spec.search.max_concurrent}
        job["scheduler"] = {"type": "none"}
        job["repeats"] = repeats
        return job

    # -- tables --------------------------------------------------------------------------------------
    def summary(self, group_by: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
                include: Iterable[str] = USABLE) -> pd.DataFrame:
        """Aggregate trials per group: for each metric its mean, std (ddof=1) and n.

        Args:
            group_by: columns to group on (e.g. ``["variant"]`` or hyperparameter names); default:
                ``variant`` for grids with variants, else every varied hyperparameter.
            metrics: metrics to aggregate (default: all the family's metrics).
            include: trial statuses kept (diverged and errored trials are counted separately
                in the ``excluded`` column, never averaged).

        Returns:
            A frame indexed by group with columns ``(metric, "mean"|"std"|"n")``, plus ``trials``
            and ``excluded``.

        Raises:
            SweepError: a metric the trials did not report, or an unknown group column.
        """
        group_by = list(group_by) if group_by else self.default_group_by()
        df = self._with_columns(self.dataframe(), group_by)
        if metrics:
            metrics = self._check_metrics(df, metrics)
        else:  # every reported metric that some trial has
            metrics = [m for m in self.metric_names if m in df.columns and df[m].notna().any()]
        keyed = df.assign(**{g: _group_labels(df[g]) for g in group_by})
        kept = keyed[keyed["status"].isin(list(include))]
        agg = {}
        for m in metrics:
            values = pd.to_numeric(kept[m], errors="coerce")
            grouped = values.groupby([kept[g] for g in group_by], sort=False)
            agg[(m, "mean")] = grouped.mean()
            agg[(m, "std")] = grouped.std(ddof=1)
            agg[(m, "n")] = grouped.count()
        out = pd.DataFrame(agg)
        counts = keyed.groupby(group_by, sort=False).size()
        excluded = keyed[~keyed["status"].isin(list(include))].groupby(group_by, sort=False).size()
        out = out.reindex(counts.index)
        out[("trials", "")] = counts
        out[("excluded", "")] = excluded.reindex(counts.index).fillna(0).astype(int)
        if self.metric in metrics:
            out = out.sort_values((self.metric, "mean"), ascending=self.mode == "min", na_position="last")
        return out

    def _check_metrics(self, df: pd.DataFrame, metrics: Iterable[str]) -> list[str]:
        """``metrics`` as a list; SweepError naming the numeric columns there are if one is not
        a column of ``df``."""
        metrics = list(metrics)
        unknown = [m for m in metrics if m not in df.columns]
        if unknown:
            numeric = [c for c in df.columns if c not in ("seed", "training_iteration")
                       and c not in self.param_names and pd.api.types.is_numeric_dtype(df[c])]
            raise SweepError(f"--metrics {', '.join(unknown)}: not reported by the trials of "
                             f"{self.path}; choose from {', '.join(numeric)}")
        return metrics

    def _with_columns(self, df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
        """``df`` with a column for each of ``names``: a hyperparameter the sweep held fixed (e.g.
        ``n_latent`` of a seeds-only job) is read from the trials' configs, so sweeps that vary
        different things can be grouped on the same names.

        Raises:
            SweepError: a name is neither a column nor in any trial's config.
        """
        missing = [g for g in names if g not in df.columns]
        if not missing:
            return df
        configs = {t.trial_id: t.config for t in self._ea.trials}
        df = df.copy()
        for g in missing:
            if any(g in c for c in configs.values()):
                df[g] = df["trial_id"].map(lambda i, g=g: configs.get(i, {}).get(g))
        unknown = [g for g in names if g not in df.columns]
        if unknown:
            settings = sorted({k for c in configs.values() for k in c if not k.startswith("_")})
            raise SweepError(f"--group-by {', '.join(unknown)}: not a column or hyperparameter of sweep "
                             f"{self.spec.name!r}; choose from "
                             f"{', '.join(c for c in df.columns if c not in ('path',))} or "
                             f"{', '.join(k for k in settings if k not in df.columns)}")
        return df

    def default_group_by(self) -> list[str]:
        """``variant`` when the grid has variants, else every varied hyperparameter, else
        ``config`` (one configuration run once per seed: a single mean ± std row)."""
        if self.spec.search.variants:
            return ["variant"]
        return self.param_names or ["config"]

    def table(self, group_by: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
              fmt: str = "markdown", digits: int = 4, status: Iterable[str] | None = None) -> str:
        """The sweep as a printable table.

        Without ``group_by``: one row per trial (status, varied hyperparameters, seed,
        iterations, metrics). With ``group_by``: one row per group, each metric as
        ``mean ± std`` over the group's trials with ``n`` (the seeds' tables, with statistics).

        Args:
            group_by: columns to aggregate over (see :meth:`summary`).
            metrics: metrics shown (default: all the family's metrics).
            fmt: ``markdown`` | ``csv`` | ``latex`` | ``html``.
            digits: significant digits of the numbers.
            status: trial statuses to show (e.g. ``["completed"]`` to leave out trials ASHA
                stopped at a shorter budget); default: every trial, and in grouped tables the
                completed, stopped and unfinished ones (the rest counted as ``excluded``).

        Raises:
            SweepError: unknown format, group column or status.
        """
        if fmt not in _FORMATS:
            raise SweepError(f"--format {fmt!r}: choose one of {', '.join(_FORMATS)}")
        status = list(status) if status else None
        unknown = [s for s in status or [] if s not in STATUSES]
        if unknown:
            raise SweepError(f"--status {', '.join(unknown)}: not a trial status; choose from "
                             f"{', '.join(STATUSES)}")
        if group_by:
            frame = self._grouped_frame(self.summary(group_by, metrics, include=status or USABLE), digits)
        else:
            df = self.dataframe()
            if status:
                df = df[df["status"].isin(status)]
            metrics = (self._check_metrics(df, metrics) if metrics
                       else [m for m in self.metric_names if m in df.columns])
            cols = ["trial_id", "status"] + (["variant"] if "variant" in df else []) + \
                [p for p in self.param_names if p in df] + ["seed", "training_iteration"] + metrics + \
                [c for c in ("num_params", "train_seconds") if c in df and c not in metrics]
            frame = df[[c for c in cols if c in df.columns]].copy()
            frame = frame.drop(columns=[m for m in metrics if m in frame and frame[m].isna().all()])
            for c in frame.columns:
                if pd.api.types.is_float_dtype(frame[c]):
                    frame[c] = frame[c].map(lambda v: _fmt(v, digits))
        return _render(frame, fmt)

    def _grouped_frame(self, summary: pd.DataFrame, digits: int) -> pd.DataFrame:
        out = pd.DataFrame(index=summary.index)
        metrics = [m for m in dict.fromkeys(c[0] for c in summary.columns) if m not in ("trials", "excluded")]
        for m in metrics:
            out[m] = [_pm(mu, sd, digits) for mu, sd in zip(summary[(m, "mean")], summary[(m, "std")])]
        out["n"] = summary[(metrics[0], "n")] if metrics else 0
        out["excluded"] = summary[("excluded", "")]
        return out.reset_index()

    def metric_mode(self, metric: str | None = None) -> str:
        """``"max"`` or ``"min"``: the job's mode for its objective, else the family's for ``metric``."""
        metric = metric or self.metric
        return self.mode if metric == self.metric else self.spec.family().metrics[metric][0]

    def group_values(self, metric: str | None = None,
                     group_by: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The finite last values of ``metric`` of the usable trials, per group (``" / "``-joined
        values of ``group_by``; default :meth:`default_group_by`)."""
        metric = metric or self.metric
        group_by = list(group_by) if group_by else self.default_group_by()
        df = self._with_columns(self.dataframe(), group_by)
        df = df[df["status"].isin(USABLE)]
        key = pd.DataFrame({g: _group_labels(df[g]) for g in group_by}).agg(" / ".join, axis=1)
        return {k: pd.to_numeric(df.loc[key == k, metric], errors="coerce").dropna().to_numpy()
                for k in key.unique()}

    def compare(self, metric: str | None = None, group_by: Iterable[str] | None = None) -> pd.DataFrame:
        """Welch's t-test (scipy) of each group against the best group on ``metric``.

        Returns:
            A frame with one row per other group: ``group``, ``mean``, ``diff`` (group − best),
            ``t``, ``p_value`` (two-sided), ``n``. With fewer than 2 trials in a group the
            test is undefined and ``p_value`` is NaN.
        """
        return welch_against_best(self.group_values(metric, group_by), self.metric_mode(metric))


    # -- plots ---------------------------------------------------------------------------------------
    def to_optuna_study(self, metric: str | None = None, at_iteration: int | None = None):
        """The sweep as an in-memory Optuna study (one finished trial per sweep trial; diverged or
        errored trials as failed), for Optuna's analysis and visualisation tools
        (``optuna.importance``, ``optuna.visualization``).

        Args:
            metric: the value of each Optuna trial (default: the job's metric).
            at_iteration: take ``metric`` at this ``training_iteration`` instead of each trial's
                last result. Under ASHA the last results mix budgets (a trial stopped at the grace
                period is scored on fewer iterations than a completed one), which biases
                importances towards whatever ASHA favoured; at the grace period every trial is
                scored on the same budget. A trial counts by its value there whatever happened
                later (stopped, unfinished, diverged); one that never reached it counts as failed.

        Raises:
            SweepError: when the sweep has no varied hyperparameters, or when no trial reached
                ``at_iteration``.
        """
        import optuna

        from sweeplab.spec import CategoricalParam, FloatParam

        metric = metric or self.metric
        mode = self.mode if metric == self.metric else self.spec.family().metrics[metric][0]
        if not self.spec.search.space:
            raise SweepError(f"{self.path}: the sweep has no search space to analyse")
        dists = {}
        for name, p in self.spec.search.space.items():
            if isinstance(p, CategoricalParam):
                dists[name] = optuna.distributions.CategoricalDistribution(p.values)
            elif isinstance(p, FloatParam):
                dists[name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
            else:
                dists[name] = optuna.distributions.IntDistribution(p.low, p.high, log=p.log, step=p.step)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                    study_name=self.spec.name)
        frame = self.dataframe()
        if at_iteration is not None:
            hist = self.history()
            reached = hist[hist["training_iteration"] == at_iteration]
            if reached.empty or metric not in reached:
                raise SweepError(f"{self.path}: no trial reported {metric!r} at training_iteration "
                                 f"{at_iteration}; trials ran {int(hist['training_iteration'].min())}-"
                                 f"{int(hist['training_iteration'].max())} iterations")
            at = reached.set_index("trial_id")[metric]
            frame = frame.assign(**{metric: frame["trial_id"].map(at)})
        for _, row in frame.iterrows():
            params = {k: _py(row[k]) for k in dists if k in row and not _missing(row[k])}
            value = row.get(metric)
            ok = ((at_iteration is not None or row["status"] in ("completed", "stopped"))
                  and not _missing(value) and math.isfinite(float(value)))
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params},
                value=float(value) if ok else None,
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
                user_attrs={"trial_id": row["trial_id"], "status": row["status"]}))
        return study

    def plot(self, out_dir: str | Path, metric: str | None = None,
             at_iteration: int | None = None) -> list[Path]:
        """Write the sweep's figures as PNGs into ``out_dir``.

        ``curves.png``: ``metric`` per iteration of every trial (ASHA-stopped trials dashed).
        With a search space, Optuna's matplotlib visualisations of the same study:
        ``importances.png`` (fANOVA hyperparameter importances), ``parallel.png`` (parallel
        coordinates) and ``slice.png``; with ``at_iteration`` they score every trial at that
        ``training_iteration`` (see :meth:`to_optuna_study`), e.g. ASHA's grace period.

        Raises:
            SweepError: from :meth:`to_optuna_study`.

        Returns:
            The paths written.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metric = metric or self.metric
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        hist, df = self.history(), self.dataframe().set_index("trial_id")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for trial_id, frame in hist.groupby("trial_id"):
            if metric not in frame:
                continue
            status = df.loc[trial_id, "status"] if trial_id in df.index else ""
            ax.plot(frame["training_iteration"], frame[metric], "--" if status == "stopped" else "-",
                    alpha=0.8, label=f"{trial_id} ({status})")
        ax.set_xlabel("training_iteration")
        ax.set_ylabel(metric)
        ax.set_title(f"{self.spec.name}: {metric} per iteration (dashed: stopped by ASHA)")
        if hist["trial_id"].nunique() <= 12:
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "curves.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
        if self.spec.search.space:
            import warnings

            import optuna
            from optuna.visualization import matplotlib as ovm

            study = self.to_optuna_study(metric, at_iteration)
            done = [t for t in study.trials if t.state.name == "COMPLETE"]
            plots = [("parallel.png", ovm.plot_parallel_coordinate), ("slice.png", ovm.plot_slice)]
            if len(done) >= 2 and len(self.spec.search.space) >= 2:
                # fANOVA fits a random forest: seed it, so the same sweep gives the same figure
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
                plots.insert(0, ("importances.png",
                                 lambda st: ovm.plot_param_importances(st, evaluator=evaluator)))
            for fname, fn in plots:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                    axes = fn(study)
                first = axes.flat[0] if hasattr(axes, "flat") else axes
                first.figure.set_size_inches(max(7, 2.5 * len(self.spec.search.space)), 4.5)
                with warnings.catch_warnings():  # colour-bar axes: tight_layout warns, still fine
                    warnings.simplefilter("ignore", UserWarning)
                    first.figure.tight_layout()
                written.append(out / fname)
                first.figure.savefig(written[-1], dpi=110)
                plt.close(first.figure)
        return written


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _group_labels(column: pd.Series) -> pd.Series:
    """Values as group labels; a missing value (a conditional hyperparameter a trial did not
    sample) becomes ``"n/a"``, so its trials form a group instead of being dropped by groupby."""
    return column.map(lambda v: "n/a" if _missing(v) else str(v)).astype(object)


def _py(value: Any) -> Any:
    """NumPy scalars -> Python scalars (Optuna checks categorical choices by equality and type)."""
    return value.item() if hasattr(value, "item") else value


def _status(trial: Any, last: dict[str, Any], max_t: int) -> str:
    if last.get("diverged"):
        return "diverged"
    status = getattr(trial, "status", "")
    if status == "ERROR":
        return "error"
    if status == "TERMINATED" and not last.get("training_iteration"):
        return "cancelled"  # ended before its first result (e.g. search.time_budget_s ran out)
    if status == "TERMINATED":
        return "completed" if last.get("training_iteration", 0) >= max_t else "stopped"
    return "unfinished"


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _pm(mean: float, std: float, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {std:.2g}"


def _render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "markdown":
        return frame.to_markdown(index=False)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "latex":
        return frame.to_latex(index=False)
    return frame.to_html(index=False)


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
        for group, v in s.group_values(metric, group_by).items():
            key = group if pool else f"{label}: {group}"
            values[key] = np.concatenate([values[key], v]) if key in values else v
    return welch_against_best(values, sweeps[0].metric_mode(metric))


def load_sweep(path: str | Path, storage_path: str | None = None) -> Sweep:
    """Open a sweep by folder, URI or name (looked up under ``storage_path`` /
    ``$SWEEPLAB_STORAGE`` / ``./sweeps``).

    Raises:
        SweepError: nothing there holds a sweep.
    """
    return Sweep(locate_sweep(str(path), storage_path))
