"""The one Ray Tune trial loop every model family shares.

Everything around a family's own work is here, written once: thread and device placement,
seeding, resuming from Ray Tune checkpoints, atomic checkpoint writes, divergence detection,
per-iteration timing (``iteration_seconds``, ``train_seconds``), fault injection for tests,
TensorBoard images and ``tune.report``.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.checkpoint import load_checkpoint_dir, save_checkpoint_dir
from sweeplab.kit.device import node_id, trial_device
from sweeplab.kit.faults import FAULT_ENV, InjectedFault, fault_for, parse_fault_rules
from sweeplab.kit.family import FamilyConfig, ModelFamily, get_family
from sweeplab.kit.media import MediaWriter


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def trial_config(family: type[ModelFamily], config: dict[str, Any]) -> FamilyConfig:
    """The family's validated Config for a trial's config as Ray Tune hands it over.

    Keys starting with ``__`` are Ray's bookkeeping (``__trial_index__``, the repeat of a
    sampled configuration, is added to ``seed``); ``variant`` labels a grid variant. A grid's
    repeats carry their seed in the point itself.
    """
    params = {k: v for k, v in config.items() if not k.startswith("__") and k != "variant"}
    repeat = int(config.get("__trial_index__", 0) or 0)
    params["seed"] = int(params.get("seed", 0)) + repeat
    return family.Config.model_validate(params)


def build_family(family: str, config: dict[str, Any], data: DataBundle, cpus: float = 1,
                 device: torch.device | None = None) -> ModelFamily:
    """Seed torch and NumPy, set the thread count and build the family for one trial.

    Args:
        family: registered family name.
        config: the trial's config (see :func:`trial_config`).
        data: the sweep's dataset.
        cpus: CPUs allotted to the trial (the default thread count).
        device: default :func:`~sweeplab.kit.device.trial_device`.
    """
    fam_cls = get_family(family)
    cfg = trial_config(fam_cls, config)
    torch.set_num_threads(int(cfg.threads or max(1, int(cpus))))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    return fam_cls(cfg, data, device or trial_device())


def run_trial(config: dict[str, Any], *, data: DataBundle, family: str,
              settings: dict[str, Any] | None = None) -> None:
    """The Ray Tune function trainable shared by every family.

    Args:
        config: the trial's hyperparameters: the job's fixed ``train`` values merged with the
            sampled ones (see :func:`trial_config`).
        data: the sweep's dataset, put in the object store once by the runner.
        family: registered family name.
        settings: ``checkpoint_every`` (iterations between checkpoints, default 1),
            ``cpus`` (CPUs allotted per trial), ``media_every`` (iterations between TensorBoard
            images, 0 = never), ``experiment_dir`` (local sweep folder, for images),
            ``fault_inject`` (rules as in :func:`~sweeplab.kit.faults.parse_fault_rules`;
            default: the ``SWEEPLAB_FAULT_INJECT`` environment variable).

    Reports after every iteration: the family's metrics, the loop's
    (:data:`~sweeplab.metrics.convention.LOOP_METRICS`), ``seed``, ``node`` (hostname),
    ``node_id`` (Ray's), ``device`` (``cpu``/``cuda``); a checkpoint every
    ``checkpoint_every`` iterations and at the end.

    When the training loss becomes NaN or infinite, the trial reports ``diverged=1`` with every
    declared metric NaN and ends (no retry, no checkpoint of the broken model); the sweep goes on.
    """
    from ray import tune

    # no "Checkpoint successfully created" line per checkpoint of every trial in the driver's console
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    settings = settings or {}
    fam = build_family(family, config, data, settings.get("cpus") or 1)
    faults = parse_fault_rules(settings["fault_inject"] if "fault_inject" in settings
                               else os.environ.get(FAULT_ENV))
    start, train_seconds = _resume_point(tune, fam)
    every = max(1, int(settings.get("checkpoint_every", 1)))
    media = MediaWriter(settings.get("media_every", 0), settings.get("experiment_dir"))
    constant = {"seed": fam.config.seed, "node": os.uname().nodename, "node_id": node_id(),
                "device": fam.device.type, **fam.extra_results()}
    total = fam.num_iterations
    try:
        for it in range(start, total):
            t0 = time.perf_counter()
            result = dict(fam.train_iteration(it))
            train_seconds += time.perf_counter() - t0
            _inject(faults, config, it + 1, result, fam.loss_metric)
            result.update(constant, train_seconds=train_seconds)
            if not _finite(result.get(fam.loss_metric, 0.0)):
                _report_diverged(tune, fam, result, constant, train_seconds, t0)
                return
            result.update(fam.evaluate(it), diverged=0)
            if media.due(it + 1, total):
                media.write(fam.media(it), it + 1)
            result["iteration_seconds"] = time.perf_counter() - t0
            _report(tune, fam, result, it + 1, train_seconds,
                    with_checkpoint=(it + 1) % every == 0 or it + 1 == total)
    finally:
        media.close()


def _resume_point(tune: Any, fam: ModelFamily) -> tuple[int, float]:
    """``(iterations done, train_seconds)`` of the Ray Tune checkpoint the trial resumes from,
    loaded into ``fam``; ``(0, 0.0)`` for a fresh start."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0, 0.0
    with checkpoint.as_directory() as d:
        return load_checkpoint_dir(Path(d), fam)


def _report_diverged(tune: Any, fam: ModelFamily, result: dict[str, Any], constant: dict[str, Any],
                     train_seconds: float, t0: float) -> None:
    """``tune.report`` an iteration whose training loss is not finite (it started at ``t0``), as
    ``diverged=1``, without a checkpoint."""
    # Every declared metric but the constant ones (num_params) is reported as NaN, the
    # epoch's train_* values too: Optuna records the trial as failed, ASHA
    # ignores it when ranking, and the analysis marks it "diverged". No checkpoint of a
    # NaN model is written, and the trial ends here instead of erroring and retrying.
    nan = {m.name: float("nan") for m in fam.metrics}
    tune.report({**result, **nan, **constant, "train_seconds": train_seconds, "diverged": 1,
                 "iteration_seconds": time.perf_counter() - t0})


def _inject(faults: list, config: dict[str, Any], iteration: int, result: dict[str, float],
            loss_metric: str) -> None:
    """Apply the fault rule matching this trial and 1-based ``iteration``, if any."""
    fault = fault_for(faults, config, iteration) if faults else None
    if fault == "raise":
        raise InjectedFault(f"{FAULT_ENV}: injected error in iteration {iteration}")
    if fault == "exit":
        os._exit(70)
    if fault == "nan":
        result[loss_metric] = float("nan")


def _report(tune: Any, fam: ModelFamily, result: dict[str, Any], done: int, train_seconds: float,
            with_checkpoint: bool) -> None:
    """``tune.report`` the result, with a checkpoint of the family after ``done`` iterations."""
    if not with_checkpoint:
        tune.report(result)
        return
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint_dir(Path(d), fam, done, train_seconds)
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
