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

Modules: :mod:`~sweeplab.results.sweep` (loading, statuses, ranking), :mod:`~.tables`,
:mod:`~.stats`, :mod:`~.plots`, :mod:`~.jobs` (best and confirmation jobs).
"""
from __future__ import annotations

from sweeplab.results.stats import compare_sweeps, welch_against_best
from sweeplab.results.sweep import STATUSES, USABLE, Sweep, load_sweep

__all__ = ["load_sweep", "Sweep", "compare_sweeps", "STATUSES", "USABLE", "welch_against_best"]
