"""Opt-in experiment trackers: ``logging.mlflow`` and ``logging.wandb`` of the job, mapped to Ray
Tune's own callbacks (``ray.air.integrations.mlflow.MLflowLoggerCallback`` and
``ray.air.integrations.wandb.WandbLoggerCallback``).

One tracker run per trial: the trial's hyperparameters as its params/config, every reported
metric at every iteration (step = ``training_iteration``), without Ray's bookkeeping keys
(``done``, ``pid``, ``hostname``, ``iterations_since_restore`` ...). Runs are named after the
trial (``trial_<id>``), tagged/grouped by sweep. Neither package is a dependency of sweeplab:
a job that asks for one that is not installed fails with one line naming the pip command.
Imported only for a job with a tracker (importing Ray's W&B integration imports ``wandb``).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

from sweeplab.runner.folder import SweepError
from sweeplab.spec import JobSpec

#: Ray's result keys that are bookkeeping, not measurements (kept: training_iteration, time_total_s).
RAY_BOOKKEEPING = ("done", "trial_id", "experiment_tag", "should_checkpoint", "node", "node_id", "node_ip",
                   "hostname", "pid", "date", "timestamp", "config", "checkpoint_dir_name",
                   "iterations_since_restore", "time_since_restore", "timesteps_since_restore",
                   "time_this_iter_s", "timesteps_total", "episodes_total", "warmup_time")

#: tracker -> (Python module, pip command)
PACKAGES = {"mlflow": ("mlflow", "pip install mlflow-skinny"), "wandb": ("wandb", "pip install wandb")}


def check_installed(spec: JobSpec) -> None:
    """Every tracker the job asks for is importable.

    Raises:
        SweepError: one line naming the ``logging.<tracker>`` field and the pip command.
    """
    for tracker, (module, pip) in PACKAGES.items():
        if getattr(spec.logging, tracker) is not None and importlib.util.find_spec(module) is None:
            raise SweepError(f"logging.{tracker}: the {module} package is not installed; {pip} "
                             f"(or remove logging.{tracker} from the job)")


def _without_bookkeeping(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in RAY_BOOKKEEPING}


class SweepMLflowCallback(MLflowLoggerCallback):
    """Ray's ``MLflowLoggerCallback`` without Ray's bookkeeping keys among the metrics (same
    arguments; module level, so Ray pickles it into ``tuner.pkl`` and a resumed sweep keeps tracking)."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        """Log the trial's measured metrics at step ``training_iteration``."""
        super().log_trial_result(iteration, trial, _without_bookkeeping(result))


class SweepWandbCallback(WandbLoggerCallback):
    """Ray's ``WandbLoggerCallback`` that honours ``mode=offline``/``disabled`` in Ray's API-key
    check (Ray skips it only when ``$WANDB_MODE`` says so: set for that check, then unset) and
    writes a local sweep's run files into ``<trial folder>/wandb/``."""

    def setup(self, *args, **kwargs) -> None:
        """Ray's setup (API key, project), with the job's mode visible to its key check."""
        mode = self.kwargs.get("mode")
        if mode not in ("offline", "disabled") or os.environ.get("WANDB_MODE"):
            return super().setup(*args, **kwargs)
        os.environ["WANDB_MODE"] = mode
        try:
            return super().setup(*args, **kwargs)
        finally:
            os.environ.pop("WANDB_MODE", None)

    def _start_logging_actor(self, trial: Any, exclude_results: list, **wandb_init_kwargs) -> None:
        """Ray's logging actor, writing W&B's run files straight into the trial's folder of a
        local sweep (Ray's default: its staging folder, copied over only when Ray next syncs)."""
        import pyarrow.fs

        if "dir" not in wandb_init_kwargs and isinstance(trial.storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            os.makedirs(trial.path, exist_ok=True)
            wandb_init_kwargs["dir"] = trial.path
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)


def _check_file_store(uri: str | None) -> None:
    """MLflow 3 refuses its file store (``file:`` URIs, plain paths) unless
    ``$MLFLOW_ALLOW_FILE_STORE`` is true: say so before the sweep starts, not in a traceback.

    Raises:
        SweepError: a file-store URI with the file store refused.
    """
    if uri is None or not (uri.startswith("file:") or "://" not in uri):
        return
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:  # an MLflow without that switch accepts its file store
        return
    if not MLFLOW_ALLOW_FILE_STORE.get():
        raise SweepError(f"logging.mlflow.tracking_uri: {uri} is MLflow's file store, which this MLflow refuses "
                         "unless MLFLOW_ALLOW_FILE_STORE=true is set; set it, or use sqlite:////abs/path/mlflow.db")


def _mlflow_callback(spec: JobSpec) -> SweepMLflowCallback:
    """The callback of ``logging.mlflow`` (experiment: the sweep's name unless set).

    Raises:
        SweepError: from :func:`_check_file_store`.
    """
    cfg = spec.logging.mlflow
    _check_file_store(cfg.tracking_uri)
    tags = {"sweeplab.sweep": spec.name or "sweep", "sweeplab.trainable": spec.trainable, **cfg.tags}
    return SweepMLflowCallback(tracking_uri=cfg.tracking_uri, experiment_name=cfg.experiment or spec.name,
                               tags=tags)


def _wandb_callback(spec: JobSpec) -> SweepWandbCallback:
    """The callback of ``logging.wandb`` (group: the sweep's name unless set)."""
    cfg = spec.logging.wandb
    init = {k: v for k, v in {"entity": cfg.entity, "mode": cfg.mode, "tags": cfg.tags or None}.items()
            if v is not None}
    return SweepWandbCallback(project=cfg.project, group=cfg.group or spec.name, excludes=list(RAY_BOOKKEEPING),
                              **init)


def tracker_callbacks(spec: JobSpec) -> list[Any]:
    """The Ray Tune callbacks of the job's trackers (``[]`` when it asks for none).

    Raises:
        SweepError: a requested tracker is not installed (:func:`check_installed`).
    """
    check_installed(spec)
    out = []
    if spec.logging.mlflow is not None:
        out.append(_mlflow_callback(spec))
    if spec.logging.wandb is not None:
        out.append(_wandb_callback(spec))
    return out
