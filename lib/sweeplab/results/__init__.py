"""Reading a finished (or interrupted) sweep: tables, best config, statistics, plots.

``load_sweep(path)`` works on any sweep folder ``sweeplab run`` wrote, local or ``s3://``; it
reads Ray Tune's own experiment state and per-trial results through
``ray.tune.ExperimentAnalysis`` (no Ray cluster needed) and the job saved beside them.

Example::

    from sweeplab.results import load_sweep
    s = load_sweep("sweeps/fashion_cnn")
    s.dataframe()                      # one row per trial: status, params, last metrics
    s.best_config()                    # the best trial's full config
    print(s.table(group_by=["norm"]))  # mean ± std over trials of each group

    s.verdicts()                       # the job's hypotheses: supported, refuted or inconclusive
    s.pareto_front(); s.pick("min num_params within 0.5% of val_accuracy")
    s.load_model()                     # the best trial's trained model, from its best kept checkpoint

Modules: :mod:`~sweeplab.results.sweep` (loading, statuses, ranking), :mod:`~.tables`,
:mod:`~.stats`, :mod:`~.plots`, :mod:`~.jobs` (best and confirmation jobs), :mod:`~.verdicts`
and :mod:`~.effects` (hypotheses and their statistics), :mod:`~.pareto` (several objectives),
:mod:`~.model` (trained models), :mod:`~.report` (the HTML report), :mod:`~.views` (the
methods of :class:`Sweep` that lead to them).
"""
from __future__ import annotations

from sweeplab.results.stats import compare_sweeps, welch_against_best
from sweeplab.results.sweep import STATUSES, USABLE, Sweep, load_sweep

__all__ = ["load_sweep", "Sweep", "compare_sweeps", "STATUSES", "USABLE", "welch_against_best"]
