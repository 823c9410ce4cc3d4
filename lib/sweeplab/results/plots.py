"""Figures of a sweep: learning curves, and the sweep as an Optuna study for Optuna's analysis
and matplotlib visualisations (importances, parallel coordinates, slices)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sweeplab.results.sweep import SweepError
from sweeplab.results.tables import missing

if TYPE_CHECKING:
    from sweeplab.results.sweep import Sweep

#: statuses whose last result scores an Optuna trial (others count as failed)
_SCORED = ("completed", "stopped")


def _py(value: Any) -> Any:
    """NumPy scalars -> Python scalars (Optuna checks categorical choices by equality and type)."""
    return value.item() if hasattr(value, "item") else value


def _distributions(space: dict[str, Any]) -> dict[str, Any]:
    """The search space's parameters as Optuna distributions."""
    import optuna

    dists = {}
    for name, p in space.items():
        if p.type == "categorical":
            dists[name] = optuna.distributions.CategoricalDistribution(p.values)
        elif p.type == "float":
            dists[name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        else:
            dists[name] = optuna.distributions.IntDistribution(p.low, p.high, log=p.log, step=p.step)
    return dists


def _at_iteration(sweep: Sweep, frame: pd.DataFrame, metric: str, at_iteration: int) -> pd.DataFrame:
    """``frame`` with ``metric`` taken at ``training_iteration == at_iteration`` (NaN for a
    trial that never reached it).

    Raises:
        SweepError: no trial reported ``metric`` at that iteration.
    """
    hist = sweep.history()
    reached = hist[hist["training_iteration"] == at_iteration]
    if reached.empty or metric not in reached:
        raise SweepError(f"{sweep.path}: no trial reported {metric!r} at training_iteration "
                         f"{at_iteration}; trials ran {int(hist['training_iteration'].min())}-"
                         f"{int(hist['training_iteration'].max())} iterations")
    at = reached.set_index("trial_id")[metric]
    return frame.assign(**{metric: frame["trial_id"].map(at)})


def to_optuna_study(sweep: Sweep, metric: str | None = None, at_iteration: int | None = None):
    """The sweep as an in-memory Optuna study (one finished trial per sweep trial; diverged or
    errored trials as failed), for Optuna's analysis and visualisation tools
    (``optuna.importance``, ``optuna.visualization``).

    Args:
        metric: the value of each Optuna trial (default: the job's metric); the study's direction
            is :meth:`~sweeplab.results.sweep.Sweep.metric_mode`.
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

    metric = metric or sweep.metric
    mode = sweep.metric_mode(metric)
    if not sweep.spec.search.space:
        raise SweepError(f"{sweep.path}: the sweep has no search space to analyse")
    dists = _distributions(sweep.spec.search.space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                study_name=sweep.spec.name)
    frame = sweep.dataframe()
    if at_iteration is not None:
        frame = _at_iteration(sweep, frame, metric, at_iteration)
    for _, row in frame.iterrows():
        params = {k: _py(row[k]) for k in dists if k in row and not missing(row[k])}
        value = row.get(metric)
        ok = ((at_iteration is not None or row["status"] in _SCORED)
              and not missing(value) and math.isfinite(float(value)))
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params},
            value=float(value) if ok else None,
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
            user_attrs={"trial_id": row["trial_id"], "status": row["status"]}))
    return study


def plot(sweep: Sweep, out_dir: str | Path, metric: str | None = None,
         at_iteration: int | None = None) -> list[Path]:
    """Write the sweep's figures as PNGs into ``out_dir``.

    ``curves.png``: ``metric`` per iteration of every trial (ASHA-stopped trials dashed).
    With a search space, Optuna's matplotlib visualisations of the same study:
    ``importances.png`` (fANOVA hyperparameter importances), ``parallel.png`` (parallel
    coordinates) and ``slice.png``; with ``at_iteration`` they score every trial at that
    ``training_iteration`` (see :func:`to_optuna_study`), e.g. ASHA's grace period.

    Raises:
        SweepError: ``out_dir`` exists and is not a folder; from :func:`to_optuna_study`.

    Returns:
        The paths written.
    """
    import matplotlib

    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise SweepError(f"--out {out_dir}: is a file, not a folder; give a folder for the PNGs")
    matplotlib.use("Agg")
    metric = metric or sweep.metric
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_curves(sweep, out / "curves.png", metric)]
    if sweep.spec.search.space:
        written += plot_study(sweep, out, metric, at_iteration)
    return written


def plot_curves(sweep: Sweep, path: Path, metric: str) -> Path:
    """``metric`` per ``training_iteration`` of every trial, ASHA-stopped trials dashed, as ``path``."""
    import matplotlib.pyplot as plt

    hist, df = sweep.history(), sweep.dataframe().set_index("trial_id")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for trial_id, frame in hist.groupby("trial_id"):
        if metric not in frame:
            continue
        status = df.loc[trial_id, "status"] if trial_id in df.index else ""
        ax.plot(frame["training_iteration"], frame[metric], "--" if status == "stopped" else "-",
                alpha=0.8, label=f"{trial_id} ({status})")
    ax.set_xlabel("training_iteration")
    ax.set_ylabel(metric)
    ax.set_title(f"{sweep.spec.name}: {metric} per iteration (dashed: stopped by ASHA)")
    if hist["trial_id"].nunique() <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_study(sweep: Sweep, out: Path, metric: str, at_iteration: int | None) -> list[Path]:
    """Optuna's importances (with at least two scored trials and two parameters), parallel
    coordinates and slice plots of :func:`to_optuna_study`, as PNGs in ``out``."""
    import warnings

    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    study = to_optuna_study(sweep, metric, at_iteration)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    n_params = len(sweep.spec.search.space)
    plots = [("parallel.png", ovm.plot_parallel_coordinate), ("slice.png", ovm.plot_slice)]
    if len(done) >= 2 and n_params >= 2:
        # fANOVA fits a random forest: seed it, so the same sweep gives the same figure
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        plots.insert(0, ("importances.png", lambda st: ovm.plot_param_importances(st, evaluator=evaluator)))
    written = []
    for fname, fn in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = fn(study)
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        first.figure.set_size_inches(max(7, 2.5 * n_params), 4.5)
        with warnings.catch_warnings():  # colour-bar axes: tight_layout warns, still fine
            warnings.simplefilter("ignore", UserWarning)
            first.figure.tight_layout()
        written.append(out / fname)
        first.figure.savefig(written[-1], dpi=110)
        plt.close(first.figure)
    return written
