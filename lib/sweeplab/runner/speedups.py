"""Two changes to Ray Tune's driver that make sweeps of many small trials cheaper, applied
before a sweep's ``Tuner`` runs (:func:`apply_driver_speedups`).

Both change Ray Tune internals, so they follow :mod:`.repairs`' rule: pinned to
:data:`~sweeplab.runner.repairs.RAY_REPAIRS_VERSION`, checked to apply, and a WARNING naming the
change and what the user sees instead whenever it cannot (another Ray, Ray's code moved). Neither
changes what a sweep computes or saves; they change when Ray saves and what it imports.

Upgrading Ray: check both against the new version (the Ray issues named below), delete what it
fixed, re-run ``tests/test_startup.py``, ``tests/test_faults.py`` and ``tests/test_sweep.py``.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import time
from typing import Any

from sweeplab.runner.repairs import RAY_REPAIRS_VERSION, unpinned_ray_version

logger = logging.getLogger(__name__)

#: ``SWEEPLAB_RAY_SPEEDUPS=0`` runs Ray Tune exactly as Ray ships it (read at every use, so a
#: benchmark can compare both in one process).
SPEEDUPS_ENV = "SWEEPLAB_RAY_SPEEDUPS"

#: Marks a Ray function replaced here (so applying twice is a no-op).
_PATCHED = "__sweeplab_speedup__"

#: Whether the running sweep's folder is a plain local path, which a resume repairs
#: (set by :func:`apply_driver_speedups` for each sweep).
_local_folder = {"value": False}


def speedups_enabled() -> bool:
    """False when ``$SWEEPLAB_RAY_SPEEDUPS`` is ``0``."""
    return os.environ.get(SPEEDUPS_ENV, "1") != "0"


#: A forced experiment-state save waits until ``SAVE_GAP`` times the last save's duration has
#: passed since it ended: at most 1/(SAVE_GAP + 1) = 2 % of the driver's time goes to them (Ray
#: applies the same rule, with 19, to its periodic saves).
SAVE_GAP = 49


def _limit_forced_saves_on_local_storage() -> None:
    """The full experiment-state save Ray forces after trial checkpoints, at most 2 % of the
    driver's time when the sweep folder is local.

    Ray behaviour (2.60, ``ray/tune/execution/experiment_state.py``,
    ``_ExperimentCheckpointManager.on_trial_checkpoint``; ``tune_controller.py`` passes
    ``sync_every_n_trial_checkpoints=CheckpointConfig.num_to_keep``): with ``num_to_keep`` set,
    a trial that has checkpointed ``num_to_keep`` times since the last save forces the next
    ``checkpoint()`` to rewrite the whole experiment state (every trial's JSON), wait for the
    previous copy to the sweep folder and start another. With ``checkpoint.keep: 1`` and a
    checkpoint every iteration that is a full save per iteration of every trial, each one larger
    as trials accumulate: a cost quadratic in the number of trials (ray-project/ray#31613
    "Excessive experiment state syncing can cause significant slowdown", closed without a
    switch; the forcing came with ray-project/ray#30187). No public setting changes it
    (``TUNE_GLOBAL_CHECKPOINT_S`` sets only the periodic save).

    Here a forced save waits until :data:`SAVE_GAP` times the last save's duration has passed
    (checkpoints in between are covered by the next forced or periodic save): a small sweep,
    whose save takes milliseconds, still saves and copies after nearly every checkpoint (the
    sweep folder stays as fresh as with Ray alone); a large one saves less often as its state
    grows, so the cost per trial stays flat. Ray forces the save so that a driver killed just
    after a checkpoint deletion leaves no state naming a deleted checkpoint; for a local sweep
    folder sweeplab repairs exactly that on resume
    (:func:`~sweeplab.runner.repairs.repair_stale_checkpoints`, after
    :func:`~sweeplab.runner.repairs.recover_driver_artifacts`). Sweep folders those repairs do not
    cover (``s3://``, ``gs://``, ``file://``) keep Ray's behaviour.
    """
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager as Manager

    on_checkpoint, sync_up = Manager.on_trial_checkpoint, Manager.sync_up_experiment_state
    if getattr(on_checkpoint, _PATCHED, False):
        return
    probe = Manager(storage=None, checkpoint_period="auto")
    for attr in ("_storage", "_last_save_time", "_should_force_sync_up"):
        if not hasattr(probe, attr):
            raise AttributeError(f"_ExperimentCheckpointManager no longer has {attr}")

    def limited(self: Any) -> bool:
        fs = getattr(self._storage, "storage_filesystem", None)
        return speedups_enabled() and _local_folder["value"] and getattr(fs, "type_name", None) == "local"

    def on_trial_checkpoint(self: Any, trial: Any) -> None:
        on_checkpoint(self, trial)
        if self._should_force_sync_up and limited(self):
            since = time.monotonic() - self._last_save_time
            if since < SAVE_GAP * getattr(self, "_sweeplab_save_seconds", 0.0):
                self._should_force_sync_up = False

    def sync_up_experiment_state(self: Any, save_fn: Any, force: bool = False, wait: bool = False) -> None:
        start, last = time.monotonic(), self._last_save_time
        sync_up(self, save_fn, force=force, wait=wait)
        if self._last_save_time != last:  # it saved (not throttled): remember how long that took
            self._sweeplab_save_seconds = time.monotonic() - start

    for patched in (on_trial_checkpoint, sync_up_experiment_state):
        setattr(patched, _PATCHED, True)
    Manager.on_trial_checkpoint = on_trial_checkpoint
    Manager.sync_up_experiment_state = sync_up_experiment_state


def _count_callbacks_without_importing_trackers() -> None:
    """Ray's callback telemetry without importing every experiment tracker installed.

    Ray behaviour (2.60, ``ray/air/_internal/usage.py``, ``tag_callbacks``, called by
    ``ray/tune/tune.py`` before the first trial starts, since ray-project/ray#34904): to count
    the user's callbacks by kind it imports ``ray.air.integrations.mlflow`` and ``.wandb``, which
    import ``mlflow`` and ``wandb`` themselves when installed (sweeplab's ``trackers`` extra):
    1.1 s of the driver's time measured here, on the path to the first trial, whether or not
    usage statistics are enabled. No Ray issue about this cost was found. The replacement
    records the same tag (built-in callbacks by class name, then ``CustomLoggerCallback`` /
    ``CustomCallback``) comparing class names instead of importing the trackers' classes.
    """
    from ray.air._internal import usage

    original = usage.tag_callbacks
    if getattr(original, _PATCHED, False):
        return
    for name in ("TagKey", "record_extra_usage_tag"):
        if not hasattr(usage, name):
            raise AttributeError(f"ray.air._internal.usage.{name} is gone")
    if not hasattr(usage.TagKey, "AIR_CALLBACKS"):
        raise AttributeError("TagKey.AIR_CALLBACKS is gone")

    def tag_callbacks(callbacks: Any) -> bool:
        if not speedups_enabled():
            return original(callbacks)
        from ray.tune import Callback
        from ray.tune.logger import LoggerCallback
        from ray.tune.utils.callback import DEFAULT_CALLBACK_CLASSES

        if not callbacks:
            return False
        built_in = {"WandbLoggerCallback", "MLflowLoggerCallback", "CometLoggerCallback", "AimLoggerCallback",
                    *(c.__name__ for c in DEFAULT_CALLBACK_CLASSES)}
        counts: dict[str, int] = collections.defaultdict(int)
        for callback in callbacks:
            if not isinstance(callback, Callback):
                continue
            name = type(callback).__name__
            counts[name if name in built_in else
                   "CustomLoggerCallback" if isinstance(callback, LoggerCallback) else "CustomCallback"] += 1
        if counts:
            usage.record_extra_usage_tag(usage.TagKey.AIR_CALLBACKS, json.dumps(counts))
        return True

    setattr(tag_callbacks, _PATCHED, True)
    usage.tag_callbacks = tag_callbacks


_SPEEDUPS = {
    _limit_forced_saves_on_local_storage: "Ray saves the whole experiment state after every trial checkpoint "
                                          "(slower sweeps of many trials, nothing else changes)",
    _count_callbacks_without_importing_trackers: "Ray imports mlflow and wandb before the first trial "
                                                 "(about a second more start-up)",
}


def apply_driver_speedups(exp_path: str) -> list[str]:
    """Apply every speed-up of this module to Ray Tune in this process (the driver), once, for
    the sweep in ``exp_path`` (a local path or a URI; see
    :func:`_limit_forced_saves_on_local_storage`).

    Returns:
        The names of the speed-ups in effect. One that does not apply (Ray is not
        :data:`~sweeplab.runner.repairs.RAY_REPAIRS_VERSION`, or its code moved) is left out
        with a WARNING saying what the user sees instead; the sweep runs as Ray runs it.
    """
    from sweeplab.runner.folder import is_uri

    _local_folder["value"] = not is_uri(exp_path)
    if not speedups_enabled():
        return []
    other_ray = unpinned_ray_version()
    if other_ray is not None:
        for speedup, without in _SPEEDUPS.items():
            logger.warning("%s skipped: written for Ray %s and Ray %s is installed (sweeplab needs "
                           "ray[tune]==%s.*), so %s", speedup.__name__.lstrip("_"), RAY_REPAIRS_VERSION,
                           other_ray, RAY_REPAIRS_VERSION, without)
        return []
    applied = []
    for speedup, without in _SPEEDUPS.items():
        try:
            speedup()
            applied.append(speedup.__name__.lstrip("_"))
        except Exception as exc:  # noqa: BLE001 - Ray's code moved: run as Ray runs
            logger.warning("%s could not apply (%s: %s): Ray's code does not look as in Ray %s, so %s",
                           speedup.__name__.lstrip("_"), type(exc).__name__, exc, RAY_REPAIRS_VERSION, without)
    return applied
