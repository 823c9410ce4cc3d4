"""Samplers and schedulers: what proposes a sweep's trials and what stops them early.

Searchers: Optuna (TPE, random, CMA-ES, GP, QMC, NSGA-II; several objectives for all but CMA-ES)
through Ray Tune's ``OptunaSearch`` with a define-by-run space (so conditional parameters work),
sweeplab's ``PointsSearcher`` for grids; ``Repeater`` runs each Optuna configuration with several
seeds. Scheduling: Ray Tune's ASHA, HyperBand or median stopping rule. The Optuna study lives in
storage (:mod:`.study`: a journal file in the sweep folder, or ``search.storage``'s database).
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
    """The Optuna sampler of ``search.sampler``, seeded by ``search.seed``.

    TPE (multivariate, grouped: conditional spaces), random, CMA-ES, GP (Gaussian-process
    Bayesian optimisation, ``GPSampler``), QMC (scrambled Sobol points, ``QMCSampler``), NSGA-II
    (``NSGAIISampler``, population 50 or ``num_samples // 2``, at least 2). TPE, GP, NSGA-II,
    QMC and random take several objectives; the spec refuses CMA-ES for them.
    """
    import warnings

    import optuna

    s = spec.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = min(10, max(3, s.num_samples // 3))
    with warnings.catch_warnings():  # multivariate/group TPE, GP and QMC are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup, multivariate=True,
                                              group=True)
        if s.sampler == "random":
            return optuna.samplers.RandomSampler(seed=s.seed)
        if s.sampler == "gp":
            return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=startup, warn_independent_sampling=False)
        if s.sampler == "qmc":
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=s.seed,
                                              warn_independent_sampling=False, warn_asynchronous_seeding=False)
        if s.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=max(2, min(50, s.num_samples // 2)), seed=s.seed)
        return optuna.samplers.CmaEsSampler(seed=s.seed, warn_independent_sampling=False)


def build_search(spec: JobSpec, exp_path: str | None = None):
    """The search algorithm and the number of trials for a job (several objectives: Optuna
    gets the lists of metrics and modes).

    Args:
        spec: the validated job.
        exp_path: the new sweep's folder: the Optuna study is created in storage there
            (:func:`sweeplab.runner.study.new_study`: ``<exp_path>/optuna_journal.log``, or the
            database of ``search.storage``) and recorded in ``<exp_path>/optuna_study.json``.
            None: an in-memory study (checks, tests). Grids have no study.

    Returns:
        ``(search_alg, num_trials)``.

    Raises:
        SweepError: ``search.storage`` cannot be opened.
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

    metric, mode = ((spec.objectives(), spec.resolved_modes()) if spec.multi_objective
                    else (spec.metric, spec.resolved_mode()))
    study_name, storage = None, None
    if exp_path is not None:
        from sweeplab.runner.study import new_study

        objectives = dict(zip(spec.objectives(), spec.resolved_modes()))
        study_name, storage = new_study(spec.name or "sweep", exp_path, s.storage, objectives) or (None, None)
    alg = OptunaSearch(space=DefineByRunSpace(dict(s.space)), metric=metric, mode=mode,
                       sampler=_optuna_sampler(spec), study_name=study_name, storage=storage)
    if spec.repeats > 1:
        alg = Repeater(alg, repeat=spec.repeats, set_index=True)
    return alg, s.num_samples * spec.repeats


def build_scheduler(spec: JobSpec):
    """The job's early-stopping scheduler from Ray Tune on its objective, or None (Ray's FIFO):
    ``ASHAScheduler``, ``HyperBandScheduler`` (synchronous HyperBand; both brackets and rungs
    count ``training_iteration``), ``MedianStoppingRule`` (stops a trial whose best result so
    far is worse than the median of the other trials' running averages at that iteration)."""
    sched = spec.scheduler
    if sched.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, MedianStoppingRule

    if sched.type == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=spec.max_iterations(),
                                  reduction_factor=sched.reduction_factor)
    if sched.type == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=sched.grace_period,
                                  min_samples_required=sched.min_samples_required)
    return ASHAScheduler(time_attr="training_iteration", max_t=spec.max_iterations(),
                         grace_period=sched.grace_period, reduction_factor=sched.reduction_factor)
