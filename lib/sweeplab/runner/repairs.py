"""Workarounds of Ray Tune bugs, applied to what Ray saved in a sweep folder.

Each repair works around one behaviour of Ray Tune 2.60 (named in its docstring, with where it
happens in Ray's code) by reading or editing files whose format Ray does not promise to keep:
its experiment state (``experiment_state-*.json``, in part through Ray's internal classes) and
its driver's staging folders. They are pinned to the Ray minor version they were written and
tested against, :data:`RAY_REPAIRS_VERSION` (``pyproject.toml`` pins Ray to it too). On any
other Ray, and whenever Ray's files or classes do not look as expected, a repair changes nothing
and logs a WARNING naming itself, the reason and what the user may see instead.

Upgrading Ray: check each bug below against the new version, delete the repairs it fixed,
re-run ``tests/test_faults.py`` for the others, then move ``RAY_REPAIRS_VERSION`` and the pin in
``pyproject.toml`` together.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from sweeplab.runner.cluster import ray_temp_root
from sweeplab.runner.folder import is_uri

logger = logging.getLogger(__name__)

#: The Ray minor version every repair here was written against (``major.minor``).
RAY_REPAIRS_VERSION = "2.60"


def ray_minor_version() -> str:
    """The installed Ray's ``major.minor`` (read at every call: tests change it)."""
    import ray

    return ".".join(ray.__version__.split(".")[:2])


def unpinned_ray_version() -> str | None:
    """The installed Ray's version when it is not Ray :data:`RAY_REPAIRS_VERSION` (so the repairs
    here and the speed-ups of :mod:`.speedups` are skipped), else None."""
    import ray

    return None if ray_minor_version() == RAY_REPAIRS_VERSION else ray.__version__


def _pinned(without: str) -> Callable:
    """Run the decorated repair only on Ray :data:`RAY_REPAIRS_VERSION`; ``without`` says what
    the user may see when it is skipped. A skipped or failing repair returns ``[]`` and logs a
    WARNING; the edits of Ray's state are written only after they all succeeded, so a failure
    leaves that state as Ray wrote it."""
    def decorate(repair: Callable[..., list[str]]) -> Callable[..., list[str]]:
        @functools.wraps(repair)
        def pinned(*args: Any, **kwargs: Any) -> list[str]:
            other_ray = unpinned_ray_version()
            if other_ray is not None:
                logger.warning("%s skipped: it works around a bug of Ray %s and Ray %s is installed (sweeplab "
                               "needs ray[tune]==%s.*); the sweep folder is left as Ray wrote it, so %s",
                               repair.__name__, RAY_REPAIRS_VERSION, other_ray, RAY_REPAIRS_VERSION, without)
                return []
            try:
                return repair(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - Ray's format moved: never break the run over a repair
                logger.warning("%s could not apply (%s: %s): what Ray saved does not look as Ray %s writes it; "
                               "the sweep folder is left as Ray wrote it, so %s", repair.__name__,
                               type(exc).__name__, exc, RAY_REPAIRS_VERSION, without)
                return []
        return pinned
    return decorate


# ------------------------------------------------------------------------------------------------
# Ray's saved experiment state
# ------------------------------------------------------------------------------------------------
def _edit_experiment_state(exp_path: str, edit, *, backup: bool = False) -> list[str]:
    """Load a sweep's newest ``experiment_state-*.json`` (Ray Tune's record of every trial's
    status and checkpoint, the file ``Tuner.restore`` reads), let ``edit(state, fs, root)`` change
    its ``trial_data`` in place, and write it back when ``edit`` reports a change.

    Args:
        exp_path: the sweep folder (local path or URI).
        edit: called with the parsed state, the folder's ``pyarrow.fs`` filesystem and its path
            there; returns one line per change (empty: nothing is written).
        backup: keep Ray's file beside the edited one as ``*.json.before-repair`` (a name
            ``Tuner.restore`` does not read).

    Returns:
        What ``edit`` returned ([] when the sweep has no state yet).
    """
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(exp_path if is_uri(exp_path) else str(Path(exp_path).absolute()))
    states = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(root))
                    if Path(i.path).name.startswith("experiment_state-") and i.path.endswith(".json"))
    if not states:
        return []
    with fs.open_input_stream(states[-1]) as fh:
        original = fh.read()
    state = json.loads(original.decode())
    changes = edit(state, fs, root)
    if changes:
        if backup:
            with fs.open_output_stream(states[-1] + ".before-repair") as fh:
                fh.write(original)
        with fs.open_output_stream(states[-1]) as fh:
            fh.write(json.dumps(state).encode())
    return changes


def _errored_trials(results: Any) -> dict[str, str]:
    """trial id -> trial folder name, for every errored trial of a ``ResultGrid``."""
    errored = {}
    for result in results:
        if result.error is not None and result.path:
            trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")
            errored[trial_id] = Path(result.path).name
    return errored


@_pinned(without="trials whose worker process died may show as unfinished instead of error")
def record_lost_errors(exp_path: str, results: Any) -> list[str]:
    """Save the ERROR status of trials whose worker process died, which Ray Tune loses.

    Ray bug (2.60, ``ray/tune/execution/tune_controller.py``): when a trial's process dies (OOM
    killer, a crash, ``os._exit``), ``_actor_failed`` removes the trial's actor before the failed
    task is processed, and ``_schedule_trial_stop`` then returns early ("not live") without
    ``_mark_trial_to_checkpoint``: the trial stays RUNNING in ``experiment_state-*.json`` although
    the fit reported its error. Tables would show it ``unfinished`` and ``best_config`` could pick
    its partial results. No public API can make Ray re-save it (a ``tune.Callback`` sees
    ``on_trial_error`` but not the controller's state cache), so this marks each such trial ERROR
    (with its failure count and error file) in the saved state, from the public
    :class:`~ray.tune.ResultGrid` of the finished fit.

    Args:
        exp_path: the sweep folder (local path or URI).
        results: the ``ResultGrid`` that ``Tuner.fit()`` returned.

    Returns:
        The ids of the trials repaired.
    """
    import pyarrow.fs as pafs

    errored = _errored_trials(results)
    if not errored:
        return []

    def mark_errored(state: dict, fs: pafs.FileSystem, root: str) -> list[str]:
        repaired = []
        for entry in state["trial_data"]:
            trial, meta = json.loads(entry[0]), json.loads(entry[1])
            if trial.get("trial_id") in errored and trial.get("status") not in ("ERROR", "TERMINATED"):
                trial["status"] = "ERROR"
                meta["num_failures"] = max(int(meta.get("num_failures") or 0), int(trial.get("max_failures") or 0) + 1)
                error_file = f"{root}/{errored[trial['trial_id']]}/error.txt"
                if fs.get_file_info(error_file).type != pafs.FileType.NotFound:
                    meta["error_filename"] = "error.txt"
                entry[0], entry[1] = json.dumps(trial), json.dumps(meta)
                repaired.append(trial["trial_id"])
        return repaired

    repaired = _edit_experiment_state(exp_path, mark_errored)
    if repaired:
        logger.warning("trial(s) %s died (worker process killed); saved them as errored", ", ".join(repaired))
    return repaired


def _reported_checkpoints(trial_dir: Path) -> dict[str, dict]:
    """checkpoint folder name -> the result it was reported with (the trial's ``result.json``)."""
    rows = {}
    results = trial_dir / "result.json"
    for line in (results.read_text().splitlines() if results.exists() else []):
        row = json.loads(line)
        if row.get("checkpoint_dir_name"):
            rows[row["checkpoint_dir_name"]] = row
    return rows


def _repoint(trial: Any, root: str) -> str | None:
    """Point one trial (Ray's ``Trial``) whose latest checkpoint is gone at its newest reported
    checkpoint on disk, with Ray's iteration count and next checkpoint index to match; the note
    to log, or None when the trial needs nothing (or nothing on disk can replace it)."""
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    trial_dir = Path(root) / trial.storage.trial_dir_name
    if latest is None or (trial_dir / Path(latest.checkpoint.path).name).is_dir():
        return None
    rows = _reported_checkpoints(trial_dir)
    on_disk = sorted(d.name for d in trial_dir.glob("checkpoint_*") if d.is_dir() and d.name in rows)
    if not on_disk:
        return None
    stale, newest = Path(latest.checkpoint.path).name, on_disk[-1]
    result = _TrainingResult(checkpoint=Checkpoint(str(Path(latest.checkpoint.path).with_name(newest)),
                                                   filesystem=latest.checkpoint.filesystem),
                             metrics=rows[newest])
    manager._latest_checkpoint_result = result
    manager._checkpoint_results = [result]
    trial.storage.current_checkpoint_index = max(trial.storage.current_checkpoint_index,
                                                 int(newest.rsplit("_", 1)[1]) + 1)
    return (f"trial {trial.trial_id}: Ray's saved state named {stale}, deleted after a newer one was written "
            f"(the driver stopped in between); resuming from {newest} (iteration "
            f"{rows[newest].get('training_iteration')})")


def _repoint_stale(state: dict, fs: Any, root: str) -> list[str]:
    """The ``edit`` of :func:`repair_stale_checkpoints`, through Ray's own ``Trial`` class."""
    from ray.tune.experiment.trial import Trial

    notes = []
    for i, (trial_json, meta_json) in enumerate(state["trial_data"]):
        # a stub: the trainable need not be registered in this process (it is not, yet)
        trial = Trial.from_json_state(trial_json, stub=True)
        trial.restore_run_metadata(meta_json)
        note = _repoint(trial, root)
        if note is None:
            continue
        trial.stub = False
        trial.invalidate_json_state()
        state["trial_data"][i] = list(trial.get_json_state())
        notes.append(note)
    return notes


@_pinned(without="a trial whose saved checkpoint was deleted may error on resume "
                 "(`sweeplab resume --restart-errored` then restarts it from scratch)")
def repair_stale_checkpoints(exp_dir: Path) -> list[str]:
    """Point trials whose recorded checkpoint is gone at their newest checkpoint on disk.

    Ray bug (2.60, ``ray/train/_internal/checkpoint_manager.py``, ``register_checkpoint``): Ray
    Tune deletes a trial's older checkpoints (``checkpoint.keep``) when it registers a new one,
    and saves its experiment state (which says what each trial resumes from) a moment later. A
    driver killed between the two leaves a state that names a deleted checkpoint, and
    ``Tuner.restore`` then errors that trial ("does not exist on storage anymore"). The newer
    checkpoint is on disk, and ``result.json`` holds the result it was reported with: this
    rewrites the newest ``experiment_state-*.json`` so the trial resumes from it, with Ray's
    iteration count and next checkpoint index to match (Ray's file is kept as
    ``*.json.before-repair``). Reads and writes the state through Ray Tune's own internal
    classes (``Trial``, ``_TrainingResult``, the checkpoint manager's private fields).

    Args:
        exp_dir: a local experiment folder.

    Returns:
        One line per repaired trial (empty when nothing needed it).
    """
    return _edit_experiment_state(str(exp_dir), _repoint_stale, backup=True)


# ------------------------------------------------------------------------------------------------
# A killed driver's staging folders
# ------------------------------------------------------------------------------------------------
_APPEND_ONLY = ("result.json", "progress.csv")  # Ray Tune's per-trial logs, one line per result


def _trusted_staged_bytes(src: Path) -> bytes | None:
    """What of a file in a killed driver's staging folder can be used: the complete lines of a
    per-trial log (the driver may have died writing the last one), a JSON file only if it parses
    (Ray writes its experiment state in place), anything else as it is; ``None``: nothing."""
    data = src.read_bytes()
    if src.name in _APPEND_ONLY:
        return data[: data.rfind(b"\n") + 1]
    if src.suffix == ".json":
        try:
            json.loads(data)
        except ValueError:
            return None
    return data


def _stagings(exp_dir: Path, temp_root: Path) -> list[Path]:
    """This sweep's staging folders under Ray's temp root, oldest first."""
    own_trials = {p.name for p in exp_dir.glob("trial_*") if p.is_dir()}
    # resolved: Ray's session_latest is a link to one of the session folders
    found = {d.resolve() for d in temp_root.glob(f"session_*/artifacts/*/{exp_dir.name}/driver_artifacts")
             if d.is_dir() and own_trials & {p.name for p in d.glob("trial_*")}}
    return sorted(found, key=lambda d: max((f.stat().st_mtime for f in d.rglob("*")), default=0))


def _take(src: Path, dst: Path) -> bool:
    """Copy one staged file over its sweep-folder copy when that copy is missing, cut short or
    (for a file that is not a growing log) older; True when copied."""
    data = _trusted_staged_bytes(src)
    if data is None:
        return False
    if dst.exists():
        old = dst.read_bytes()
        cut_short = len(old) < len(data) and data.startswith(old)
        grows = src.name in _APPEND_ONLY or src.name.startswith("events.out.tfevents")
        if not cut_short and (grows or old == data or dst.stat().st_mtime >= src.stat().st_mtime):
            return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    stamp = src.stat().st_mtime
    os.utime(dst, (stamp, stamp))  # as Ray's own copy: no longer older than the staged file
    return True


def _recover_from(staging: Path, exp_dir: Path) -> list[str]:
    """The files taken from one staging folder (relative paths)."""
    copied = []
    for src in sorted(staging.rglob("*")):
        if not src.is_file() or src.name.startswith("."):
            continue
        dst = exp_dir / src.relative_to(staging)
        try:
            if _take(src, dst):
                copied.append(str(src.relative_to(staging)))
        except OSError as exc:  # unreadable or unwritable: the resume goes on with what is there
            logger.warning("could not recover %s from %s: %s", dst.relative_to(exp_dir), staging, exc)
    return copied


@_pinned(without="results the stopped driver had not yet copied into the sweep folder are not recovered")
def recover_driver_artifacts(exp_dir: Path, temp_root: Path | None = None) -> list[str]:
    """Copy into a local sweep folder what its killed driver wrote but never synced there.

    Ray behaviour (2.60, ``ray/train/_internal/storage.py``, ``experiment_driver_staging_path``):
    Ray Tune's driver writes each trial's ``result.json``, ``progress.csv`` and TensorBoard
    events, and its experiment state, into a staging folder of its Ray session
    (``<temp_root>/session_*/artifacts/<time>/<sweep name>/driver_artifacts``) and copies that
    folder to the sweep folder every few seconds, while trials write their checkpoints straight
    into the sweep folder. A driver killed between two copies leaves the sweep folder with
    results (and a state) older than the checkpoints beside them, and one killed during a copy
    leaves files cut short; the staging folder, which outlives the driver on its machine, holds
    the rest. From each staging folder of this sweep, oldest first, this takes:

    * the per-trial logs and TensorBoard event files (they only grow) where the sweep folder's
      copy is missing or a strict beginning of the staged one, up to the staged log's last
      complete line;
    * any other file where the sweep folder's copy is missing, cut short, or older (a copy Ray
      made is newer than what it copied, so only what changed after the last copy counts), a JSON
      file only if it parses.

    Files edited in the sweep folder after the driver stopped (by a resume, or
    :func:`record_lost_errors`) are newer, and are kept; so is a saved state where the staged one
    was cut short by the kill. A staging folder counts as this sweep's when it has the sweep's
    name and at least one trial folder the sweep folder also has (trial ids are random).
    Temporary files (``.*``) are skipped.

    Args:
        exp_dir: a local sweep folder.
        temp_root: Ray's temp folder (default: :func:`~sweeplab.runner.cluster.ray_temp_root`).

    Returns:
        One line per staging folder something was copied from (empty when nothing was behind).
    """
    exp_dir = Path(exp_dir)
    temp_root = temp_root or ray_temp_root()
    if temp_root is None or not exp_dir.is_dir():
        return []
    notes = []
    for staging in _stagings(exp_dir, Path(temp_root)):
        copied = _recover_from(staging, exp_dir)
        if copied:
            notes.append(f"recovered {len(copied)} file(s) the stopped driver had not yet copied into the sweep "
                         f"folder, from {staging}: {', '.join(copied[:6])}{' ...' if len(copied) > 6 else ''}")
    return notes
