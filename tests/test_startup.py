"""Start-up work a sweep does not need (issue 18, item 2): what validating and running the
digits quickstart imports, and the driver speed-ups of :mod:`sweeplab.runner.speedups`."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "tune_jobs" / "quickstart.yaml"

#: Modules the digits CNN job never uses: torchvision (no images read from files), and the
#: experiment trackers (no ``logging.mlflow``/``logging.wandb`` in the job).
UNNEEDED = ("torchvision", "mlflow", "wandb")

_REPORT = ("import json, sys; print('MODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
           f"{set(UNNEEDED)!r})))")


def _imported(code: str) -> list[str]:
    """Run ``code`` then :data:`_REPORT` in a fresh interpreter; the unneeded modules it imported."""
    out = subprocess.run([sys.executable, "-c", code + "\n" + _REPORT], capture_output=True, text=True,
                         cwd=ROOT, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("MODULES ")][-1]
    return json.loads(line[len("MODULES "):])


def test_validate_quickstart_imports_neither_torchvision_nor_ray():
    code = ("import sys\nfrom sweeplab.cli import main\n"
            f"assert main(['validate', {str(QUICKSTART)!r}]) == 0\n"
            "assert 'ray' not in sys.modules, 'validate imported Ray'")
    assert _imported(code) == []


def test_running_quickstart_imports_no_unneeded_module(ray_session, tmp_path):
    """A real sweep (2 trials of 2 epochs) from a second driver attached to the session's Ray: its
    driver imports neither torchvision nor the trackers Ray's telemetry would import."""
    address = ray_session.get_runtime_context().gcs_address
    code = ("from sweeplab.runner import run_sweep\nfrom sweeplab.spec import load_spec\n"
            f"spec = load_spec({str(QUICKSTART)!r}, ['search.num_samples=2', 'train.epochs=2', "
            "'scheduler.grace_period=1'])\n"
            f"path, results = run_sweep(spec, address={address!r}, storage_path={str(tmp_path)!r}, verbose=0)\n"
            "assert len(results) == 2 and not results.errors, results.errors")
    assert _imported(code) == []


@pytest.fixture
def speedups(monkeypatch):
    monkeypatch.delenv("SWEEPLAB_RAY_SPEEDUPS", raising=False)
    from sweeplab.runner import speedups

    return speedups


def _checkpoint_manager(tmp_path: Path):
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    storage = StorageContext(str(tmp_path), "exp")
    return _ExperimentCheckpointManager(storage=storage, checkpoint_period="auto", sync_every_n_trial_checkpoints=1)


def test_forced_state_saves_take_a_bounded_share_of_time_in_a_local_folder(ray_session, speedups, tmp_path,
                                                                           monkeypatch):
    """keep: 1 makes Ray force a full save after every checkpoint; in a local folder the next one
    waits SAVE_GAP times the last save's duration, elsewhere (or switched off) Ray forces it."""
    import time

    def saver(manager):
        def save_in_50_ms():  # as Ray's save_to_dir: a state file in the driver's staging folder
            staging = Path(manager._storage.experiment_driver_staging_path)
            staging.mkdir(parents=True, exist_ok=True)
            (staging / "experiment_state-test.json").write_text("{}")
            time.sleep(0.05)
        return save_in_50_ms

    assert "limit_forced_saves_on_local_storage" in speedups.apply_driver_speedups(str(tmp_path / "exp"))
    manager = _checkpoint_manager(tmp_path)
    manager.on_trial_checkpoint("trial_a")
    assert manager._should_force_sync_up is True  # nothing saved yet: Ray's forced save goes ahead
    manager.sync_up_experiment_state(saver(manager), force=manager._should_force_sync_up, wait=True)
    manager.on_trial_checkpoint("trial_a")  # right after a 50 ms save: wait 49 x 50 ms
    assert manager._should_force_sync_up is False
    manager._last_save_time -= speedups.SAVE_GAP * manager._sweeplab_save_seconds + 0.01  # once that has passed
    manager.on_trial_checkpoint("trial_a")
    assert manager._should_force_sync_up is True
    # a cloud sweep, which no resume repair covers, keeps Ray's forced save; so does
    # SWEEPLAB_RAY_SPEEDUPS=0 anywhere
    for folder, env in (("s3://bucket/sweeps", "1"), (str(tmp_path / "exp"), "0")):
        monkeypatch.setenv("SWEEPLAB_RAY_SPEEDUPS", env)
        speedups.apply_driver_speedups(folder)
        manager = _checkpoint_manager(tmp_path)
        manager.sync_up_experiment_state(saver(manager), force=True, wait=True)
        manager.on_trial_checkpoint("trial_a")
        assert manager._should_force_sync_up is True, (folder, env)


def test_callback_telemetry_records_what_ray_records(speedups, tmp_path, monkeypatch):
    from ray.air._internal import usage
    from ray.tune import Callback
    from ray.tune.logger import CSVLoggerCallback, LoggerCallback

    class Mine(Callback):
        pass

    class MyLogger(LoggerCallback):
        pass

    speedups.apply_driver_speedups(str(tmp_path))
    callbacks = [Mine(), MyLogger(), CSVLoggerCallback(), MyLogger()]
    recorded = []
    monkeypatch.setattr(usage, "record_extra_usage_tag", lambda key, value: recorded.append((key, value)))
    usage.tag_callbacks(callbacks)
    assert recorded == [(usage.TagKey.AIR_CALLBACKS, json.dumps(dict(usage._count_callbacks(callbacks))))]
    assert usage.tag_callbacks([]) is False


def test_another_ray_gets_no_speedup_and_a_warning(speedups, tmp_path, monkeypatch, caplog):
    import ray

    monkeypatch.setattr(ray, "__version__", "2.61.0")
    with caplog.at_level(logging.WARNING, logger="sweeplab.runner.speedups"):
        assert speedups.apply_driver_speedups(str(tmp_path)) == []
    assert "written for Ray 2.60 and Ray 2.61.0 is installed" in caplog.text
