"""The repairs of Ray's saved state, on files alone: what a killed driver left in Ray's staging
folder, and every repair skipped with a warning on a Ray version it was not written for."""
from __future__ import annotations

import json
import logging
import os
import time

from sweeplab.runner import RAY_REPAIRS_VERSION, record_lost_errors, recover_driver_artifacts, repair_stale_checkpoints


def test_recover_driver_artifacts_takes_only_this_sweeps_newer_staged_files(tmp_path):
    # the layout Ray Tune's driver stages in: <temp>/session_*/artifacts/<time>/<name>/driver_artifacts
    exp = tmp_path / "sweeps" / "mysweep"
    t1 = exp / "trial_aaaa0001"
    t1.mkdir(parents=True)
    (t1 / "result.json").write_text('{"training_iteration": 1}\n')  # the last copy Ray made
    (t1 / "progress.csv").write_text("iteration\n1\n2")  # a copy the kill cut off
    (t1 / "checkpoint_000000").mkdir()  # written by the trial, never staged
    (exp / "experiment_state-t0.json").write_text('{"saved": 1}')
    (exp / "search_gen_state-t0.json").write_text('{"saved": 1}')
    temp = tmp_path / "ray"

    def staging(session, trials):
        d = temp / session / "artifacts" / "2026-01-01_00-00-00" / "mysweep" / "driver_artifacts"
        for trial, rows in trials.items():
            (d / trial).mkdir(parents=True)
            (d / trial / "result.json").write_text("".join(f'{{"training_iteration": {i}}}\n' for i in rows))
        return d

    ours = staging("session_2", {"trial_aaaa0001": [1, 2, 3], "trial_aaaa0002": [1]})
    with open(ours / "trial_aaaa0001" / "result.json", "a") as f:
        f.write('{"training_iter')  # the driver died writing row 4
    (ours / "trial_aaaa0001" / "progress.csv").write_text("iteration\n1\n2\n3\n")
    (ours / "experiment_state-t0.json").write_text('{"saved": ')  # died writing its state (in place)
    (ours / "search_gen_state-t0.json").write_text('{"saved": 2}')
    (ours / ".1234-tmp-searcher-state-t0.pkl").write_bytes(b"half")  # Ray's temp file
    other = staging("session_3", {"trial_ffff0009": [1, 2, 3, 4]})  # another sweep of that name
    (temp / "session_latest").symlink_to(temp / "session_2")  # as Ray links its newest session
    old = time.time() - 100
    for f in (t1 / "result.json", exp / "experiment_state-t0.json", exp / "search_gen_state-t0.json"):
        os.utime(f, (old, old))  # copied before the driver's last writes
    notes = recover_driver_artifacts(exp, temp)
    assert len(notes) == 1 and str(ours) in notes[0]
    assert (t1 / "result.json").read_text() == "".join(f'{{"training_iteration": {i}}}\n' for i in (1, 2, 3))
    assert (t1 / "progress.csv").read_text() == "iteration\n1\n2\n3\n"  # the cut copy completed
    assert (exp / "trial_aaaa0002" / "result.json").exists()  # a trial the last copy missed
    assert (exp / "search_gen_state-t0.json").read_text() == '{"saved": 2}'
    assert (exp / "experiment_state-t0.json").read_text() == '{"saved": 1}'  # never a cut state
    assert not list(exp.glob(".*")) and (t1 / "checkpoint_000000").is_dir()
    assert not (exp / "trial_ffff0009").exists() and other.is_dir()  # the other sweep is not mixed in
    assert recover_driver_artifacts(exp, temp) == []  # nothing is behind any more
    # what a resume wrote after the driver stopped is kept
    (t1 / "result.json").write_text('{"training_iteration": 1}\n{"training_iteration": 9}\n')
    (exp / "search_gen_state-t0.json").write_text('{"saved": 3}')
    assert recover_driver_artifacts(exp, temp) == []
    assert (exp / "search_gen_state-t0.json").read_text() == '{"saved": 3}'
    assert recover_driver_artifacts(tmp_path / "missing", temp) == []


def test_repairs_on_another_ray_version_warn_and_leave_the_sweep_folder_alone(tmp_path, monkeypatch, caplog):
    """The repairs work around bugs of one Ray minor version through its files and classes: on
    another Ray each is skipped with a WARNING naming it, the installed Ray and the version it
    needs, and the sweep folder stays byte for byte as Ray wrote it; on the pinned version the
    same calls repair it (so the version check is what held them back); and when Ray's saved
    state does not look as expected a repair warns instead of failing the resume, and writes
    nothing."""
    import types

    import ray

    exp = tmp_path / "sweeps" / "mysweep"
    trial = exp / "trial_aaaa0001"
    (trial / "checkpoint_000001").mkdir(parents=True)
    (trial / "error.txt").write_text("the worker process died")
    state = exp / "experiment_state-t0.json"  # the trial still RUNNING, as Ray leaves a dead one
    state.write_text(json.dumps({"trial_data": [[json.dumps({"trial_id": "aaaa0001", "status": "RUNNING",
                                                             "max_failures": 0}),
                                                 json.dumps({"num_failures": 0})]]}))
    temp = tmp_path / "ray"
    staged = temp / "session_1" / "artifacts" / "2026-01-01_00-00-00" / "mysweep" / "driver_artifacts"
    (staged / trial.name).mkdir(parents=True)
    (staged / trial.name / "result.json").write_text('{"training_iteration": 1}\n')  # never copied
    died = [types.SimpleNamespace(error=RuntimeError("died"), path=str(trial), metrics={"trial_id": "aaaa0001"})]

    def folder() -> dict[str, bytes]:
        return {str(p.relative_to(exp)): p.read_bytes() for p in sorted(exp.rglob("*")) if p.is_file()}

    written_by_ray = folder()
    monkeypatch.setattr(ray, "__version__", "2.61.0")
    caplog.set_level(logging.DEBUG, logger="sweeplab.runner")
    assert record_lost_errors(str(exp), died) == []
    assert repair_stale_checkpoints(exp) == []
    assert recover_driver_artifacts(exp, temp) == []
    assert folder() == written_by_ray  # nothing edited, copied or backed up
    records = [r for r in caplog.records if r.name.startswith("sweeplab.runner")]
    assert [r.levelno for r in records] == [logging.WARNING] * 3, [(r.levelname, r.getMessage()) for r in records]
    for record, repair in zip(records, ("record_lost_errors", "repair_stale_checkpoints", "recover_driver_artifacts")):
        message = record.getMessage()
        assert message.startswith(f"{repair} skipped") and "2.61.0" in message, message
        assert f"ray[tune]=={RAY_REPAIRS_VERSION}.*" in message and "left as Ray wrote it" in message, message

    monkeypatch.setattr(ray, "__version__", f"{RAY_REPAIRS_VERSION}.0")
    assert record_lost_errors(str(exp), died) == ["aaaa0001"]
    trial_json, meta_json = json.loads(state.read_text())["trial_data"][0]
    assert json.loads(trial_json)["status"] == "ERROR" and json.loads(meta_json)["error_filename"] == "error.txt"
    assert len(recover_driver_artifacts(exp, temp)) == 1
    assert (trial / "result.json").read_text() == '{"training_iteration": 1}\n'

    # a state Ray's own Trial class cannot read (here: too few fields): a warning, nothing written
    before = folder()
    caplog.clear()
    assert repair_stale_checkpoints(exp) == []
    assert folder() == before and not list(exp.glob("*.before-repair"))
    (record,) = [r for r in caplog.records if r.name.startswith("sweeplab.runner")]
    assert record.levelno == logging.WARNING, record.getMessage()
    assert record.getMessage().startswith("repair_stale_checkpoints could not apply"), record.getMessage()


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------
