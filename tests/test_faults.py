"""Faults inside a sweep, each injected for real: trials that raise, diverge or whose worker
process dies (``SWEEPLAB_FAULT_INJECT``), a driver killed with SIGKILL and resumed, and
checkpoints that are half-written or hold pickled code.

(Losing a whole node is in test_cluster.py; bad input on the command line in test_cli_errors.py.)
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sweeplab import load_sweep
from sweeplab.cli import main
from sweeplab.kit.checkpoint import STATE_FILE, CheckpointError, load_checkpoint_dir, save_checkpoint_dir
from sweeplab.kit.family import get_family
from sweeplab.kit.faults import parse_fault_rules
from sweeplab.runner import ray_temp_root, recover_driver_artifacts, repair_stale_checkpoints, run_sweep
from sweeplab.spec import validate_spec
from test_sweep import EPOCHS as SWEEP_EPOCHS, _finished_trials, job

#: the driver-kill test's epochs a trial: three times the other sweeps', so the window in which
#: the third trial has checkpointed but not finished stays wide on a loaded machine (at 12 the
#: sweep once finished before the test saw that moment, with another run using both CPUs)
EPOCHS = 3 * SWEEP_EPOCHS



def _trial_results(exp: Path, *, live: bool = False) -> dict[str, list[dict]]:
    """trial folder -> its result rows. ``live``: the sweep is running, and Ray may be copying a
    file just now: a cut-off last line is left out."""
    out = {}
    for f in exp.glob("trial_*/result.json"):
        lines = [line for line in f.read_text().splitlines() if line.strip()]
        if live and lines:
            try:
                json.loads(lines[-1])
            except ValueError:
                lines.pop()
        out[f.parent.name] = [json.loads(line) for line in lines]
    return out


# ------------------------------------------------------------------------------------------------
# Trials that raise, diverge or die
# ------------------------------------------------------------------------------------------------
def test_fault_rules_parse_and_reject_malformed_ones():
    assert parse_fault_rules("raise@2:norm=instance; nan@1 ;exit@3:norm=group,optimizer=sgd") == [
        ("raise", 2, {"norm": "instance"}), ("nan", 1, {}), ("exit", 3, {"norm": "group", "optimizer": "sgd"})]
    assert parse_fault_rules("") == [] and parse_fault_rules(None) == []
    for bad in ("boom@2", "raise", "raise@0", "raise@x", "nan@1:norm"):
        with pytest.raises(ValueError, match="KIND@ITERATION"):
            parse_fault_rules(bad)


def test_failing_and_diverging_trials_are_marked_and_the_search_goes_on(ray_session, storage, monkeypatch):
    """TPE + ASHA over lr x norm x optimizer, where SGD with three of the norms is broken:
    ``instance`` trials raise in epoch 2, ``group`` trials' worker processes die in epoch 2 (as if
    OOM-killed), ``batch`` trials' loss turns NaN in epoch 2. The sweep still runs every planned
    trial, Optuna keeps proposing after the failures, ASHA still stops weak healthy trials, each
    broken trial is marked (error / diverged) and the best config is a healthy one, although the
    failed trials reported a finite val_accuracy for epoch 1.

    ASHA's first rung is epoch 2, so every broken trial reaches its fault. TPE's seed 21 draws
    its three random start-up trials as batch/sgd, group/sgd and instance/sgd (seeded, so the same
    on every machine), so each fault is hit whatever the later, result-driven proposals are."""
    monkeypatch.setenv("SWEEPLAB_FAULT_INJECT", "raise@2:norm=instance,optimizer=sgd;"
                       "exit@2:norm=group,optimizer=sgd;nan@2:norm=batch,optimizer=sgd")
    planned = 10
    spec = validate_spec(job(
        name="faults",
        train={"epochs": 4, "batch_size": 64, "filters": 8, "n_blocks": 2, "threads": 1},
        search={"sampler": "tpe", "seed": 21, "num_samples": planned, "max_concurrent": 1, "space": {
            "lr": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
            "norm": {"type": "categorical", "values": ["none", "batch", "instance", "group"]},
            "optimizer": {"type": "categorical", "values": ["adam", "sgd"]},
        }},
        scheduler={"type": "asha", "grace_period": 2, "reduction_factor": 2},  # first rung after the faults
        failure={"max_failures": 0},  # retries from checkpoints: test_cluster.py's lost node
    ))
    t0 = time.time()
    path, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    seconds = time.time() - t0
    sweep = load_sweep(path)
    df = sweep.dataframe().set_index("trial_id")
    assert len(df) == planned  # every planned trial ran
    df["kind"] = ["healthy" if opt != "sgd" or norm == "none" else norm for norm, opt in zip(df["norm"], df["optimizer"])]
    by_kind = {kind: set(group["status"]) for kind, group in df.groupby("kind")}
    assert by_kind == {"healthy": by_kind["healthy"], "instance": {"error"}, "group": {"error"}, "batch": {"diverged"}}
    assert by_kind["healthy"] <= {"completed", "stopped"} and "completed" in by_kind["healthy"]
    # trial folders are 'trial_<id> <varied values>': look results up by the id
    results = {name.split(" ")[0]: rows for name, rows in _trial_results(Path(path)).items()}
    started = {}
    for trial_id, row in df.iterrows():
        res = results.get(f"trial_{trial_id}", [])
        started[trial_id] = res[0]["timestamp"] - res[0]["time_this_iter_s"] if res else float("inf")
        iters = [r["training_iteration"] for r in res]
        if row["status"] == "error":
            assert iters == [1] and np.isfinite(row["val_accuracy"]), (trial_id, row["kind"], iters)
            error = (Path(row["path"]) / "error.txt").read_text()
            assert ("InjectedFault" in error) if row["kind"] == "instance" else ("died" in error), error[-500:]
        elif row["status"] == "diverged":
            assert iters == [1, 2] and np.isnan(row["val_accuracy"])
    # Optuna went on proposing after the first failure, and those trials ran
    first_fault = min(started[t] for t in df.index[df["status"].isin(["error", "diverged"])])
    assert sum(started[t] > first_fault for t in df.index[df["kind"] == "healthy"]) >= 2
    # ASHA still stopped weak healthy trials early
    healthy = df[df["kind"] == "healthy"]
    assert (healthy["status"] == "stopped").any(), healthy[["lr", "status", "training_iteration"]]
    # the best config is a healthy trial, never a failed or diverged one
    best = sweep.best_config()
    top = healthy["val_accuracy"].astype(float).idxmax()
    assert best["lr"] == pytest.approx(healthy.loc[top, "lr"]) and best["norm"] == healthy.loc[top, "norm"]
    counts = df["status"].value_counts().to_dict()
    print(f"\nfaults: {planned} trials planned, {planned} finished ({counts}), 0 lost; {seconds:.1f} s")


# ------------------------------------------------------------------------------------------------
# The driver killed with SIGKILL, then `sweeplab resume`
# ------------------------------------------------------------------------------------------------
def _kill_session(sid: int) -> None:
    """SIGKILL what is left of the killed driver's own processes (its local Ray)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[3]) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def _name_a_deleted_checkpoint(exp: Path, trial_dir_name: str) -> str:
    """Rewrite the sweep's newest experiment state so that trial's latest checkpoint is the one
    before its newest reported one, and delete that one: the state a driver killed between Ray's
    checkpoint deletion and its next state save leaves. Returns that checkpoint's name."""
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint
    from ray.tune.experiment.trial import Trial

    trial_dir = exp / trial_dir_name
    rows = {r["checkpoint_dir_name"]: r for r in _trial_results(exp)[trial_dir_name] if r.get("checkpoint_dir_name")}
    # checkpoints with a reported result (a newer folder may be there without one: the driver
    # died before it processed that result, and Ray never resumes from those)
    older, newest = sorted(rows)[-2:]
    assert (trial_dir / newest).is_dir(), (sorted(d.name for d in trial_dir.glob("checkpoint_*")), sorted(rows))
    shutil.rmtree(trial_dir / older, ignore_errors=True)  # what Ray's checkpoint.keep does
    state_file = sorted(exp.glob("experiment_state-*.json"))[-1]
    state = json.loads(state_file.read_text())
    for i, (trial_json, meta_json) in enumerate(state["trial_data"]):
        trial = Trial.from_json_state(trial_json, stub=True)  # run_trial is not registered here
        trial.restore_run_metadata(meta_json)
        if trial.storage.trial_dir_name != trial_dir_name:
            continue
        result = _TrainingResult(checkpoint=Checkpoint(str(trial_dir / older),
                                                       filesystem=trial.storage.storage_filesystem),
                                 metrics=rows[older])
        manager = trial.run_metadata.checkpoint_manager
        manager._latest_checkpoint_result, manager._checkpoint_results = result, [result]
        trial.stub = False
        trial.invalidate_json_state()
        state["trial_data"][i] = list(trial.get_json_state())
    state_file.write_text(json.dumps(state))
    return older


def _killed_job(tmp_path: Path, planned: int) -> Path:
    """The job file of the driver-kill test: ``planned`` random-search trials, one at a time."""
    jobfile = tmp_path / "killed.yaml"
    jobfile.write_text(yaml.safe_dump(job(
        name="killed",
        train={"epochs": EPOCHS, "batch_size": 64, "filters": 8, "n_blocks": 2, "threads": 1},
        search={"sampler": "random", "seed": 11, "num_samples": planned, "max_concurrent": 1, "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}},
        scheduler={"type": "none"},
    )))
    return jobfile


def _run_and_kill_driver(jobfile: Path, storage: Path, exp: Path) -> subprocess.Popen:
    """``sweeplab run`` in a subprocess, SIGKILLed once two trials are done and the third has
    checkpointed at least twice (then its local Ray is killed too); the finished process."""
    # the driver's own local Ray, on the loopback address (Ray's switch for one-machine Ray)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeplab.cli", "run", str(jobfile), "--quiet",
                             "--storage-path", str(storage), "--num-cpus", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # kill once two trials are done and the third has checkpointed at least twice
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            done = _finished_trials(exp, EPOCHS)
            running = {n: len(r) for n, r in _trial_results(exp, live=True).items() if n not in done and r}
            if len(done) >= 2 and any(n >= 2 for n in running.values()):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the sweep did not get going:\n{proc.communicate()[0][-3000:] if proc.poll() is not None else ''}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _kill_session(proc.pid)
    return proc


def _check_staged_results_are_recovered(exp: Path) -> None:
    """Put a running trial's newest result row behind in the sweep folder (only the killed
    driver's staging folder holds it) and check :func:`recover_driver_artifacts` gets it back."""
    # Ray's driver writes results into a staging folder of its Ray session and copies it here every
    # few seconds: whatever came after the last copy is only there. Make sure something is behind
    # (a running trial's newest result row), then get it back as `sweeplab resume` does.
    running = [n for n, rows in _trial_results(exp, live=True).items()
               if rows and rows[-1]["training_iteration"] < EPOCHS]
    (staging,) = {d.resolve() for d in ray_temp_root().glob("session_*/artifacts/*/killed/driver_artifacts")
                  if (d / running[0] / "result.json").exists()}  # (session_latest links to one)
    staged = (staging / running[0] / "result.json").read_text()
    staged_rows = staged[:staged.rfind("\n") + 1].splitlines()  # (a row being written is left out)
    behind = exp / running[0] / "result.json"
    behind.write_text("".join(row + "\n" for row in staged_rows[:-1]))
    notes = recover_driver_artifacts(exp)
    assert any(str(staging) in note for note in notes), notes
    assert behind.read_text().splitlines() == staged_rows
    assert recover_driver_artifacts(exp) == []  # nothing behind any more


def _check_resumed_without_rerun(exp: Path, planned: int, before: dict, params_before: dict,
                                 interrupted: dict[str, list[int]]) -> tuple[list[int], int]:
    """Check the resumed sweep: every planned trial completed once, finished ones untouched,
    nothing re-sampled, the interrupted one continued from its last checkpoint. Returns the
    interrupted trial's iterations before the kill and the iteration it resumed at."""
    df = load_sweep(str(exp)).dataframe()
    assert len(df) == planned and set(df["status"]) == {"completed"}, df[["trial_id", "status"]]
    assert len(list(exp.glob("trial_*"))) == planned  # no trial created twice
    after = _finished_trials(exp, EPOCHS)
    for name, n in before.items():
        assert after[name] == n, f"{name} was re-run"  # finished trials untouched
    for name, params in params_before.items():
        assert json.loads((exp / name / "params.json").read_text()) == params  # nothing re-sampled
    assert df["lr"].nunique() == planned  # no configuration sampled twice
    (name, iters_before), = interrupted.items()
    iters = [r["training_iteration"] for r in _trial_results(exp)[name]]
    resumed_at = iters[len(iters_before)]
    # continued from its last checkpoint (at most the epoch in flight at the kill is redone)
    assert iters[:len(iters_before)] == iters_before and iters_before[-1] <= resumed_at + 1
    assert resumed_at >= iters_before[-1] and iters[-1] == EPOCHS and set(iters) == set(range(1, EPOCHS + 1))
    table = load_sweep(str(exp)).table()
    assert len(table.splitlines()) == 2 + planned
    return iters_before, resumed_at


def test_resume_after_the_driver_is_killed(ray_session, storage, tmp_path, capsys, caplog):
    planned = 4
    jobfile = _killed_job(tmp_path, planned)
    exp = storage / "killed"
    t0 = time.time()
    proc = _run_and_kill_driver(jobfile, storage, exp)
    assert proc.returncode == -signal.SIGKILL
    _check_staged_results_are_recovered(exp)
    before = _finished_trials(exp, EPOCHS)
    results_before = _trial_results(exp)
    interrupted = {n: [r["training_iteration"] for r in res] for n, res in results_before.items() if n not in before}
    assert len(before) < planned and len(interrupted) == 1, (before, interrupted)
    params_before = {p.parent.name: json.loads(p.read_text()) for p in exp.glob("trial_*/params.json")}
    # the kill can land after Ray deleted the older checkpoint and before it saved the state that
    # names the newer one (a real race, hit in CI); make that happen every time, so the resume
    # below always has to repair it
    (name,) = interrupted
    stale = _name_a_deleted_checkpoint(exp, name)

    capsys.readouterr()
    caplog.set_level(logging.WARNING, logger="sweeplab.runner")
    assert main(["resume", "killed", "--storage-path", str(storage)]) == 0
    assert any(stale in r.getMessage() and name.removeprefix("trial_").split(" ")[0] in r.getMessage()
               for r in caplog.records), caplog.text
    iters_before, resumed_at = _check_resumed_without_rerun(exp, planned, before, params_before, interrupted)
    print(f"\ndriver SIGKILL: {planned} trials planned, {len(before)} finished before the kill and kept, "
          f"1 interrupted at epoch {iters_before[-1]} resumed at epoch {resumed_at}, "
          f"{planned - len(before) - 1} run after resume, 0 re-run, 0 lost; {time.time() - t0:.1f} s")


def test_resume_repairs_a_state_that_names_a_deleted_checkpoint(ray_session, storage):
    # The race the driver-kill test can hit: Ray deletes the older checkpoint (keep: 1) when it
    # registers a newer one and saves its experiment state a moment later; a driver killed in
    # between leaves a state naming the deleted checkpoint. Build that state from a real sweep.
    from ray.tune.experiment.trial import Trial

    spec = validate_spec(job(name="stale", train={"epochs": 2, "batch_size": 64, "filters": 4,
                                                    "n_blocks": 1, "threads": 1},
                             scheduler={"type": "none"}, checkpoint={"every": 1, "keep": 1}))
    path, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    exp = Path(path)
    assert repair_stale_checkpoints(exp) == []  # a consistent state is left alone
    state_file = sorted(exp.glob("experiment_state-*.json"))[-1]
    before = state_file.read_text()
    trial_dir = next(exp.glob("trial_*"))
    (old,) = [d for d in trial_dir.glob("checkpoint_*")]
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert rows[-1]["checkpoint_dir_name"] == old.name
    # "a newer checkpoint was written, the old one deleted, and then the driver died"
    index = int(old.name.rsplit("_", 1)[1])
    newer = old.with_name(f"checkpoint_{index + 1:06d}")
    old.rename(newer)
    with open(trial_dir / "result.json", "a") as f:
        f.write(json.dumps({**rows[-1], "training_iteration": rows[-1]["training_iteration"] + 1,
                            "checkpoint_dir_name": newer.name}) + "\n")
    notes = repair_stale_checkpoints(exp)
    assert len(notes) == 1 and old.name in notes[0] and newer.name in notes[0]
    assert state_file.read_text() != before
    assert state_file.with_name(state_file.name + ".before-repair").read_text() == before  # Ray's, kept
    trial_json, meta_json = json.loads(state_file.read_text())["trial_data"][0]
    trial = Trial.from_json_state(trial_json)
    trial.restore_run_metadata(meta_json)
    latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    assert Path(latest.checkpoint.path) == newer and Path(latest.checkpoint.path).is_dir()
    assert latest.metrics["training_iteration"] == rows[-1]["training_iteration"] + 1  # Ray's count matches
    assert trial.storage.current_checkpoint_index == index + 2  # the next save cannot overwrite it
    assert repair_stale_checkpoints(exp) == []  # and now it is consistent


@pytest.fixture
def family():
    from sweeplab.runner import prepare_data

    torch.set_num_threads(1)
    spec = validate_spec(job(train={"epochs": 2, "batch_size": 64, "filters": 4, "n_blocks": 1, "threads": 1}))
    data = prepare_data(spec)
    return get_family("cnn_classifier")(spec.family_config(), data, torch.device("cpu"))


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: what a malicious checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_holding_a_pickled_object_is_refused(family, tmp_path):
    save_checkpoint_dir(tmp_path, family, 1, 0.5)
    assert load_checkpoint_dir(tmp_path, family) == (1, 0.5)  # a real checkpoint loads
    marker = tmp_path / "code-ran"
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    state["family"]["extra"] = _Payload(marker)
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save(state, evil / STATE_FILE)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint_dir(evil, family)
    assert not marker.exists()  # nothing in it was executed
    torch.load(evil / STATE_FILE, weights_only=False)  # the payload is real: a plain load runs it
    assert marker.exists()
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / STATE_FILE).write_bytes((tmp_path / STATE_FILE).read_bytes()[:200])
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint_dir(truncated, family)


def test_checkpoint_write_is_atomic(family, tmp_path):
    save_checkpoint_dir(tmp_path, family, 1, 1.0)
    good = (tmp_path / STATE_FILE).read_bytes()

    class Unpicklable(type(family)):
        def state_dict(self):
            return {**super().state_dict(), "oops": lambda: None}  # fails half-way through torch.save

    broken = Unpicklable(family.config, family.data, family.device)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint_dir(tmp_path, broken, 2, 2.0)
    assert (tmp_path / STATE_FILE).read_bytes() == good  # the last good checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # no half-written file left
    assert load_checkpoint_dir(tmp_path, family) == (1, 1.0)
