"""``load_sweep(path).load_model()``: the trained model of a trial from the checkpoint of its best
iteration (checkpoints kept by score), on a sweep folder moved elsewhere, reproducing the
metrics the trial reported; and the reproducibility record with ``sweeplab info``."""
from __future__ import annotations

import shutil

import pytest
import torch

from sweeplab import load_sweep
from sweeplab.cli import main
from sweeplab.results.sweep import SweepError
from sweeplab.spec import validate_spec

JOB = {
    "name": "models",
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.25},
    "train": {"epochs": 3, "batch_size": 64, "filters": 4, "n_blocks": 1, "threads": 1, "lr": 0.01, "dropout": 0.2},
    "search": {"sampler": "grid", "variants": [{"name": "only", "norm": "batch"}]},
    "metric": "val_accuracy",
    "scheduler": {"type": "none"},
    # keep the one checkpoint with the LEAST cumulative training time: the first iteration's, so
    # the best-scored checkpoint is not the last (Ray keeps the latest too, for resuming)
    "checkpoint": {"every": 1, "keep": 1, "score": "train_seconds"},
}


@pytest.fixture(scope="module")
def moved_sweep(ray_session, tmp_path_factory):
    """The sweep run in one folder, then moved to another (as if copied to another machine)."""
    from sweeplab.runner import run_sweep

    path, _ = run_sweep(validate_spec(dict(JOB)), storage_path=str(tmp_path_factory.mktemp("orig")), verbose=0)
    moved = tmp_path_factory.mktemp("moved") / "models"
    shutil.move(path, moved)
    return load_sweep(str(moved))


def _recomputed(loaded) -> dict[str, float]:
    fam = loaded.family
    return fam.evaluate(loaded.iteration - 1)


def test_best_checkpoint_reproduces_the_reported_metrics(moved_sweep):
    hist = moved_sweep.history()
    trial_id = moved_sweep.dataframe().loc[0, "trial_id"]
    best = moved_sweep.load_model()  # the best (only) trial, its best-scored checkpoint
    assert best.trial_id == trial_id and best.iteration == 1  # kept by score: not the last
    assert isinstance(best.model, torch.nn.Module) and best.config["lr"] == 0.01 and best.config["seed"] == 0
    assert str(best.checkpoint).startswith(str(moved_sweep.path))  # the moved folder, not the original
    again = _recomputed(best)
    reported = hist[(hist["trial_id"] == trial_id) & (hist["training_iteration"] == 1)].iloc[0]
    for m in ("val_accuracy", "val_loss", "test_accuracy"):
        assert again[m] == pytest.approx(reported[m], rel=1e-6, abs=1e-9), m
    last = moved_sweep.load_model(trial_id, checkpoint="last")
    assert last.iteration == 3
    reported3 = hist[(hist["trial_id"] == trial_id) & (hist["training_iteration"] == 3)].iloc[0]
    assert _recomputed(last)["val_loss"] == pytest.approx(reported3["val_loss"], rel=1e-6)
    assert _recomputed(last)["val_loss"] != pytest.approx(again["val_loss"], rel=1e-6)  # two different models
    # Ray deleted the middle checkpoint: kept by score (iteration 1) and the latest (iteration 3)
    from sweeplab.results.model import checkpoints

    assert sorted(checkpoints(moved_sweep, trial_id)["training_iteration"]) == [1, 3]
    with pytest.raises(SweepError, match="no trial 'nope'"):
        moved_sweep.load_model("nope")
    with pytest.raises(SweepError, match="checkpoint='middle'"):
        moved_sweep.load_model(checkpoint="middle")


def test_the_record_says_what_ran_the_sweep(moved_sweep, capsys):
    import sys

    record = moved_sweep.record()
    run = record["sessions"][0]
    assert run["event"] == "run" and run["python"] == sys.version.split()[0]
    assert run["packages"]["torch"] == torch.__version__.split("+")[0] or run["packages"]["torch"] == torch.__version__
    assert run["packages"]["ray"] and run["cpu"]["count"] >= 1 and run["ray_cluster"]["cpus"] >= 1
    git = run["sweeplab_git"]
    assert git["commit"] is None or len(git["commit"]) == 40
    assert record["job"]["checkpoint"]["score"] == "train_seconds"
    assert main(["info", moved_sweep.path]) == 0
    out = capsys.readouterr().out
    assert "session 1: run" in out and "packages" in out and "score: train_seconds" in out
