"""From a validated :class:`~sweeplab.spec.JobSpec` to a Ray Tune ``Tuner`` run, and back
(resume): the only code that builds a ``Tuner``.

The dataset is read once here, in the driver, and handed to every trial through Ray's object
store (``tune.with_parameters``). Searchers and schedulers come from :mod:`.search`, the sweep
folder from :mod:`.folder`, Ray and its checks from :mod:`.cluster`, and the workarounds of Ray
bugs on what Ray saved from :mod:`.repairs`. Logging: Ray Tune's CSV/JSON loggers and
:class:`~sweeplab.tensorboard.TrialTensorBoard` (trial folders named by
:class:`~sweeplab.tensorboard.TrialDirName`); the console: :mod:`.progress`.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from sweeplab.runner import cluster, record, repairs
from sweeplab.runner.data import prepare_data
from sweeplab.runner.folder import (SweepError, experiment_path, has_tuner_state, is_uri, locate_sweep, read_job,
                                    resolve_storage, save_job)
from sweeplab.runner.search import build_scheduler, build_search
from sweeplab.spec import JobSpec

logger = logging.getLogger(__name__)


def fault_injection(warn: bool = False) -> str:
    """The driver's ``SWEEPLAB_FAULT_INJECT`` (testing only), checked; every trial receives it.
    ``warn`` logs a warning when it is set.

    Raises:
        SweepError: a malformed rule.
    """
    from sweeplab.kit.faults import FAULT_ENV, parse_fault_rules

    faults = os.environ.get(FAULT_ENV, "")
    try:
        parse_fault_rules(faults)
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    if faults and warn:
        logger.warning("%s=%s: injecting faults into matching trials", FAULT_ENV, faults)
    return faults


def make_trainable(spec: JobSpec, data: Any, exp_path: str | None = None):
    """The shared trial loop bound to this job's family, data (via the object store) and
    per-trial resources. ``exp_path``: the sweep folder, where trials write their TensorBoard
    images directly when it is a local (or shared) path."""
    from ray import tune

    from sweeplab.kit.loop import run_trial

    settings = {"cpus": spec.resources.cpu, "checkpoint_every": spec.checkpoint.every,
                "media_every": spec.logging.media_every, "fault_inject": fault_injection(),
                "experiment_dir": None if exp_path is None or is_uri(exp_path) else exp_path}
    fn = tune.with_parameters(run_trial, data=data, family=spec.trainable, settings=settings)
    return tune.with_resources(fn, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _callbacks(spec: JobSpec, verbose: int = 1) -> list[Any]:
    from sweeplab.runner.progress import progress_callbacks
    from sweeplab.tensorboard import sweep_loggers

    return sweep_loggers(spec) + progress_callbacks(spec, verbose) + _trackers(spec)


def _trackers(spec: JobSpec) -> list[Any]:
    """The job's opt-in MLflow / W&B callbacks (:mod:`.trackers`, imported only when asked for)."""
    if spec.logging.mlflow is None and spec.logging.wandb is None:
        return []
    from sweeplab.runner.trackers import tracker_callbacks

    return tracker_callbacks(spec)


def _trial_name(trial: Any) -> str:
    """Short trial names (``trial_<id>``) in Ray's messages; sweeps before run-named folders
    (:class:`~sweeplab.tensorboard.TrialDirName`) also named their folders with it."""
    return f"trial_{trial.trial_id}"


def _restored_output(tuner: Any, spec: JobSpec, verbose: int) -> None:
    """A restored ``Tuner`` runs with the callbacks and verbosity of its saved ``RunConfig``;
    ``Tuner.restore`` takes no new one, so they are replaced through the tuner's own accessor
    (as ``Tuner.fit`` does for Ray Client): this session's loggers, status line and ``-v``/``-q``."""
    from sweeplab.runner.progress import ray_output

    # Ray internals (pinned: ray 2.60, runner.repairs.RAY_REPAIRS_VERSION): Tuner.restore accepts no
    # RunConfig and exposes no public accessor to the restored one (ray-project/ray#41364, which names this
    # very workaround)
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None or not hasattr(internal, "get_run_config"):
        logger.warning("resume: this Ray (%s) does not expose the restored tuner's run settings; the sweep "
                       "continues with the callbacks and verbosity saved when it started",
                       "Ray Client" if internal is None else "an unpinned version")
        return
    run_config = internal.get_run_config()
    run_config.callbacks = _callbacks(spec, verbose)
    run_config.verbose = ray_output(verbose)


def _quiet_ray_console(address: str | None) -> None:
    """Before Ray is first imported, so its console carries only what sweeplab means to show:
    a local Ray keeps token authentication on (Ray's default) without its warning about the
    unset mode (``RAY_AUTH_MODE=token`` unless the user set it; Ray generates the token); Ray
    adds none of its own loggers (the runner passes them, :func:`sweeplab.tensorboard.sweep_loggers`),
    hence no TensorBoard hint into Ray's staging folder either."""
    if address is None and "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


def _start_ray(spec: JobSpec, address: str | None, num_cpus: int | None, dashboard: bool, storage: str) -> None:
    """Check the fault rules, start (or attach to) Ray, and check the job fits it."""
    fault_injection(warn=True)
    cluster.init_ray(address, num_cpus, dashboard)
    cluster.check_resources(spec)
    if address:
        cluster.check_storage(storage)
    from sweeplab.runner.speedups import apply_driver_speedups

    apply_driver_speedups(storage)  # fewer experiment-state saves, no tracker imports (Ray 2.60)


def _new_tuner(spec: JobSpec, data: Any, storage: str, exp_path: str, verbose: int, search: tuple):
    """The ``Tuner`` of a new sweep; ``search``: ``(search_alg, num_trials, scheduler)``."""
    from ray import tune

    from sweeplab.runner.progress import ray_output
    from sweeplab.tensorboard import TrialDirName, run_name_keys

    search_alg, num_trials, scheduler = search
    # several objectives: the searcher gets them (OptunaSearch takes lists); Ray's TuneConfig
    # takes one metric, which only a scheduler or Ray's own best-result needs, so it gets none
    metric, mode = (None, None) if spec.multi_objective else (spec.metric, spec.resolved_mode())
    return tune.Tuner(
        make_trainable(spec, data, exp_path),
        param_space=dict(spec.train),
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, search_alg=search_alg,
            scheduler=scheduler, num_samples=num_trials,
            max_concurrent_trials=spec.search.max_concurrent, time_budget_s=spec.search.time_budget_s,
            reuse_actors=True, trial_name_creator=_trial_name, trial_dirname_creator=TrialDirName(run_name_keys(spec))),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=storage, verbose=ray_output(verbose),
            # with s3:// or gs:// storage, images written in the trial's working dir are uploaded
            sync_config=tune.SyncConfig(sync_artifacts=is_uri(storage)),
            checkpoint_config=_checkpoint_config(spec),
            failure_config=tune.FailureConfig(max_failures=spec.failure.max_failures),
            callbacks=_callbacks(spec, verbose)),
    )


def _checkpoint_config(spec: JobSpec):
    """Ray's ``CheckpointConfig``: the latest ``keep`` checkpoints, or with ``checkpoint.score``
    the ``keep`` best by that metric (Ray keeps the latest as well, for resuming)."""
    from ray import tune

    score = spec.checkpoint.score
    if score is None:
        return tune.CheckpointConfig(num_to_keep=spec.checkpoint.keep)
    if score in spec.objectives():
        order = spec.resolved_modes()[spec.objectives().index(score)]
    else:
        order = spec.family().metric_table()[score].mode
    return tune.CheckpointConfig(num_to_keep=spec.checkpoint.keep, checkpoint_score_attribute=score,
                                 checkpoint_score_order=order)


def _record(spec: JobSpec, exp_path: str, event: str) -> None:
    """Append this session to the sweep folder's reproducibility record (:mod:`.record`)."""
    job = spec.model_dump(mode="json")
    root = spec.data.resolved_root()
    if root is not None:
        job["data"]["root"] = str(root)
    record.write_record(exp_path, job, event)


def run_sweep(spec: JobSpec, *, address: str | None = None, storage_path: str | None = None,
              name: str | None = None, num_cpus: int | None = None, dashboard: bool = False,
              verbose: int = 1):
    """Run a job as a Ray Tune sweep and return ``(experiment_path, ResultGrid)``.

    Args:
        spec: the validated job.
        address: attach to this Ray cluster (``"auto"``, ``"host:6379"``) instead of a local Ray.
        storage_path: where the sweep folder goes (local path, ``s3://``, ``gs://``).
        name: the sweep's folder name (default: ``spec.name``).
        num_cpus: CPUs of a local Ray (default: all).
        dashboard: start Ray's dashboard with a local Ray.
        verbose: 0 silent, 1 a status line every few seconds, 2 and Ray Tune's per-trial
            tables, 3 and Ray's table after every result (:mod:`sweeplab.runner.progress`).

    Raises:
        SweepError: the folder already holds a sweep, or resources/storage cannot work.
        DatasetError: unreadable data.
    """
    cluster.prefer_loopback(address)  # before Ray is first imported
    _quiet_ray_console(address)
    name = name or spec.name or "sweep"
    spec = spec.model_copy(update={"name": name})
    storage = resolve_storage(spec, storage_path)
    exp_path = experiment_path(storage, name)
    if has_tuner_state(exp_path):
        raise SweepError(f"{exp_path} already holds a sweep; continue it with `sweeplab resume {exp_path}` "
                         "or start another with --name")
    data = prepare_data(spec)  # before Ray starts: bad data fails fast
    _trackers(spec)  # a tracker that is not installed, too
    scheduler = build_scheduler(spec)
    _start_ray(spec, address, num_cpus, dashboard, storage)
    # the Optuna study is created in storage (study.py) once every check has passed: bad input writes nothing
    search = (*build_search(spec, exp_path), scheduler)
    save_job(spec, exp_path)
    _record(spec, exp_path, "run")
    results = _new_tuner(spec, data, storage, exp_path, verbose, search).fit()
    repairs.record_lost_errors(exp_path, results)
    return exp_path, results


def _repair_local_folder(exp_path: str) -> None:
    """Before a local sweep resumes: take back what a killed driver staged but never copied
    there, then repair a saved state naming a checkpoint deleted after it was saved."""
    for note in repairs.recover_driver_artifacts(Path(exp_path)) + repairs.repair_stale_checkpoints(Path(exp_path)):
        logger.warning(note)


def resume_sweep(name_or_path: str, *, storage_path: str | None = None, address: str | None = None,
                 num_cpus: int | None = None, dashboard: bool = False, restart_errored: bool = False,
                 verbose: int = 1):
    """Continue an interrupted sweep (Ctrl-C, killed driver, lost node).

    Finished trials are kept as they are; unfinished ones continue from their last checkpoint;
    errored ones are resumed from their checkpoint (or restarted with ``restart_errored``).
    For a local sweep folder, results a killed driver recorded but had not yet copied there are
    recovered first, and a saved state naming a deleted checkpoint is repaired
    (:mod:`sweeplab.runner.repairs`). ``verbose``: as :func:`run_sweep`'s.

    Returns:
        ``(experiment_path, ResultGrid)``.

    Raises:
        SweepError: the path holds no sweep.
    """
    cluster.prefer_loopback(address)  # before Ray is first imported
    _quiet_ray_console(address)
    exp_path = locate_sweep(name_or_path, storage_path)
    read_job(exp_path)  # a sweep folder at all?
    if not has_tuner_state(exp_path):
        raise SweepError(f"{exp_path}: the sweep never started (no tuner.pkl); run it again with `sweeplab run`")
    spec = read_job(exp_path, check_data=True)  # resuming needs the data where the job says
    data = prepare_data(spec)
    _start_ray(spec, address, num_cpus, dashboard, exp_path)
    if not is_uri(exp_path):
        _repair_local_folder(exp_path)
    _record(spec, exp_path, "resume")
    from ray import tune

    from sweeplab.runner.study import prepare_resume

    prepare_resume(exp_path)  # a moved sweep folder: its embedded Optuna study is reopened there
    tuner = tune.Tuner.restore(exp_path, trainable=make_trainable(spec, data, exp_path),
                               resume_unfinished=True, resume_errored=not restart_errored,
                               restart_errored=restart_errored)
    _restored_output(tuner, spec, verbose)
    results = tuner.fit()
    repairs.record_lost_errors(exp_path, results)
    return exp_path, results
