"""Opt-in experiment trackers (runner/trackers.py) for real: MLflow's local file store read back
with MLflow's own API, W&B in offline mode read back from its run files."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sweeplab import load_sweep
from sweeplab.runner import SweepError, run_sweep
from sweeplab.runner.trackers import RAY_BOOKKEEPING, tracker_callbacks
from sweeplab.spec import SpecError, validate_spec

JOB = {"trainable": "analytic", "data": {"name": "none"}, "train": {"function": "branin", "budget": 3},
       "search": {"sampler": "random", "seed": 2, "num_samples": 2, "max_concurrent": 2, "space": {
           "x1": {"type": "float", "low": -5.0, "high": 10.0}, "x2": {"type": "float", "low": 0.0, "high": 15.0}}},
       "metric": "val_value", "mode": "min", "scheduler": {"type": "none"}, "checkpoint": {"every": 3, "keep": 1}}


def spec_with(name: str, **logging):
    return validate_spec({**JOB, "name": name, "logging": logging})


def curves(exp: str) -> dict[tuple[float, float], dict[int, float]]:
    """(x1, x2) -> {training_iteration: val_value} of every trial of the sweep."""
    sweep = load_sweep(exp)
    df, hist = sweep.dataframe(), sweep.history()
    out = {}
    for _, row in df.iterrows():
        h = hist[hist["trial_id"] == row["trial_id"]]
        out[(row["x1"], row["x2"])] = dict(zip(h["training_iteration"].astype(int), h["val_value"]))
    return out


def test_mlflow_file_store_holds_one_run_per_trial(ray_session, storage, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="pip install mlflow-skinny")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store without it
    uri = (tmp_path / "mlruns").as_uri()
    spec = spec_with("ml", mlflow={"tracking_uri": uri, "experiment": "branin-study", "tags": {"team": "hpo"}})
    exp, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    expected = curves(exp)

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["branin-study"])
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    assert set(runs["tags.team"]) == {"hpo"} and set(runs["tags.sweeplab.sweep"]) == {"ml"}
    client = mlflow.tracking.MlflowClient(uri)
    for _, run in runs.iterrows():
        key = (float(run["params.x1"]), float(run["params.x2"]))
        assert key in expected, (key, list(expected))
        assert run["params.budget"] == "3" and run["params.function"] == "branin"
        history = {m.step: m.value for m in client.get_metric_history(run["run_id"], "val_value")}
        assert history == pytest.approx(expected[key])  # every iteration, step = training_iteration
        assert run["metrics.val_value"] == pytest.approx(expected[key][3])
        logged = {c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")}
        assert {"regret", "train_loss", "training_iteration"} <= logged
        assert not logged & set(RAY_BOOKKEEPING), logged & set(RAY_BOOKKEEPING)


def _wandb_records(run_file: Path) -> list[bytes]:
    """The records of a W&B run file: a 7-byte header (``:W&B``, magic, version), then LevelDB's
    log format (32 KiB blocks; each chunk: crc32, little-endian length, type FULL/FIRST/MIDDLE/LAST).
    wandb >= 0.19 dropped its Python reader (the Go core writes the file)."""
    import struct

    raw, pos, out, parts = run_file.read_bytes(), 7, [], b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's zero trailer
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        parts += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            out.append(parts)
            parts = b""
    return out


def _wandb_history(run_file: Path) -> list[dict]:
    """The history rows (``wandb.log`` calls) of an offline run file, decoded with W&B's protobufs."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for data in _wandb_records(run_file):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in rec.history.item})
    return rows


def test_wandb_offline_writes_each_trials_metrics(ray_session, storage, monkeypatch):
    pytest.importorskip("wandb", reason="pip install wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # offline needs no key
    monkeypatch.delenv("WANDB_MODE", raising=False)
    spec = spec_with("wb", wandb={"project": "sweeplab-test", "mode": "offline"})
    # one trial: W&B starts its own core process per run (seconds each)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"num_samples": 1})})
    exp, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    expected = curves(exp)
    run_files = sorted(Path(exp).glob("trial_*/wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, sorted(p.relative_to(exp) for p in Path(exp).rglob("*.wandb"))
    for run_file in run_files:
        rows = _wandb_history(run_file)
        params = json.loads((run_file.parents[2] / "params.json").read_text())
        curve = expected[(params["x1"], params["x2"])]
        assert {int(r["training_iteration"]): r["val_value"] for r in rows} == pytest.approx(curve)
        assert not set().union(*rows) & {"done", "pid", "hostname", "iterations_since_restore"}


def test_tracker_fields_and_missing_packages(monkeypatch):
    with pytest.raises(SpecError, match="logging.wandb.project"):
        validate_spec({**JOB, "logging": {"wandb": {"mode": "offline"}}})
    with pytest.raises(SpecError, match="logging.mlflow.tracking"):
        validate_spec({**JOB, "logging": {"mlflow": {"tracking": "file:/x"}}})
    spec = spec_with("t", mlflow={}, wandb={"project": "p"})
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    if pytest.importorskip("mlflow").__version__ >= "3":
        with pytest.raises(SweepError, match="MLFLOW_ALLOW_FILE_STORE=true"):
            tracker_callbacks(spec_with("t", mlflow={"tracking_uri": "file:/tmp/mlruns"}))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(SweepError, match="logging.mlflow: the mlflow package is not installed; pip install mlflow-sk"):
        tracker_callbacks(spec)
    monkeypatch.delitem(sys.modules, "mlflow")
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(SweepError, match="logging.wandb: the wandb package is not installed; pip install wandb"):
        tracker_callbacks(spec)
