"""Samplers and schedulers: what proposes a sweep's trials and what stops them early.

Searchers: Optuna (TPE, random, CMA-ES) through Ray Tune's ``OptunaSearch`` with a
define-by-run space (so conditional parameters work), sweeplab's ``PointsSearcher`` for grids;
``Repeater`` runs each Optuna configuration with several seeds. Scheduling: ``ASHAScheduler``.
"""
from __future__ import annotations

from typing import Any

from sweeplab.spec import CategoricalParam, FloatParam, IntParam, JobSpec


class DefineByRunSpace:
    """The search space as an Optuna define-by-run function (picklable, so resumable).

    A conditional parameter is suggested only when its ``when`` condition holds for the values
    suggested before it.
    """

    def __init__(self, space: dict[str, Any]) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        from sweeplab.spec import condition_holds

        values: dict[str, Any] = {}
        for name, p in self.space.items():
            if not condition_holds(p.when, values):
                continue
            if isinstance(p, FloatParam):
                values[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
            elif isinstance(p, IntParam):
                values[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            elif isinstance(p, CategoricalParam):
                values[name] = trial.suggest_categorical(name, p.values)
        return None


# Saved searcher states pickle this class by name, and sweeps written before the runner became a
# package name it `sweeplab.runner.DefineByRunSpace`: new ones use that stable, public name too.
DefineByRunSpace.__module__ = "sweeplab.runner"


def _optuna_sampler(spec: JobSpec):
    import warnings

    import optuna

    s = spec.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if s.sampler == "tpe":
        startup = min(10, max(3, s.num_samples // 3))
        with warnings.catch_warnings():  # multivariate/group TPE are marked experimental by Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup, multivariate=True,
                                              group=True)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    return optuna.samplers.CmaEsSampler(seed=s.seed, warn_independent_sampling=False)


def build_search(spec: JobSpec):
    """The search algorithm and the number of trials for a job.

    Returns:
        ``(search_alg, num_trials)``.
    """
    from ray.tune.search import Repeater

    from sweeplab.searchers import PointsSearcher

    s = spec.search
    if s.sampler == "grid":
        # a repeat's seed goes into its point, so Ray's params.json shows the seed the trial ran with
        # (a sampler's repeats get theirs from Ray's __trial_index__, added in run_trial)
        base_seed = int(spec.train.get("seed", 0) or 0)
        points = [{**p, "seed": int(p.get("seed", base_seed) or 0) + r}
                  for p in s.grid_points() for r in range(spec.repeats)]
        return PointsSearcher(points), len(points)

    from ray.tune.search.optuna import OptunaSearch

    alg = OptunaSearch(space=DefineByRunSpace(dict(s.space)), metric=spec.metric,
                       mode=spec.resolved_mode(), sampler=_optuna_sampler(spec))
    if spec.repeats > 1:
        alg = Repeater(alg, repeat=spec.repeats, set_index=True)
    return alg, s.num_samples * spec.repeats


def build_scheduler(spec: JobSpec):
    """ASHA as the job says, or None (Ray's FIFO)."""
    if spec.scheduler.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=spec.max_iterations(),
                         grace_period=spec.scheduler.grace_period,
                         reduction_factor=spec.scheduler.reduction_factor)
