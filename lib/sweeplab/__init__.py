"""sweeplab: hyperparameter sweeps of research models on Ray Tune (Optuna + ASHA).

    from sweeplab import load_sweep
    s = load_sweep("sweeps/quickstart")
    s.dataframe(); s.best_config(); print(s.table(group_by=["norm"]))
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_sweep", "compare_sweeps", "load_spec", "run_sweep", "resume_sweep", "__version__"]


def __getattr__(name: str):
    # Lazy: importing sweeplab must not import Ray or torch (the CLI's validate stays fast).
    if name in ("load_sweep", "compare_sweeps"):
        from sweeplab import results

        return getattr(results, name)
    if name == "load_spec":
        from sweeplab.spec import load_spec

        return load_spec
    if name in ("run_sweep", "resume_sweep"):
        from sweeplab import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'sweeplab' has no attribute {name!r}")
