"""The results package: statuses against each trial's own budget (a searched ``epochs``), and
sweep folders written before a metric rename loading with the current names."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sweeplab.results import STATUSES, USABLE, load_sweep
from sweeplab.results.sweep import rename_columns, rename_result, trial_status

# -- without Ray -------------------------------------------------------------------------------


def test_trial_status_against_the_trials_own_budget():
    assert trial_status("TERMINATED", {"training_iteration": 1, "diverged": 0}, budget=1) == "completed"
    assert trial_status("TERMINATED", {"training_iteration": 1}, budget=3) == "stopped"
    assert trial_status("TERMINATED", {"training_iteration": 3}, budget=3) == "completed"
    assert trial_status("TERMINATED", {"training_iteration": 2, "diverged": 1}, budget=3) == "diverged"
    assert trial_status("TERMINATED", {}, budget=3) == "cancelled"
    assert trial_status("ERROR", {"training_iteration": 1}, budget=3) == "error"
    assert trial_status("RUNNING", {"training_iteration": 1}, budget=3) == "unfinished"
    assert trial_status("PENDING", {}, budget=3) == "unfinished"
    assert set(USABLE) <= set(STATUSES)


def test_old_metric_names_map_to_current_ones():
    renamed = {"accuracy": "test_accuracy", "ks_eval": "test_ks_eval", "train_time_s": "train_seconds"}
    old = {"accuracy": 0.9, "ks_eval": 0.1, "train_time_s": 3.0, "train_loss": 0.2, "seed": 1}
    assert rename_result(old, renamed) == {"test_accuracy": 0.9, "test_ks_eval": 0.1,
                                           "train_seconds": 3.0, "train_loss": 0.2, "seed": 1}
    # a name reported under both its old and its current name: the current value wins
    assert rename_result({"train_time_s": 3.0, "train_seconds": 2.5}, renamed) == {"train_seconds": 2.5}
    # renames apply at once: an old name may be another old name's new one
    chain = {"loss": "test_loss", "test_loss": "test_elbo"}
    assert rename_result({"loss": 1.0, "test_loss": 2.0}, chain) == {"test_loss": 1.0, "test_elbo": 2.0}
    frame = pd.DataFrame({"training_iteration": [1, 2], "accuracy": [0.5, 0.7], "train_time_s": [1.0, 2.0],
                          "train_seconds": [0.9, 1.9]})
    out = rename_columns(frame, renamed)
    assert list(out.columns) == ["training_iteration", "test_accuracy", "train_seconds"]
    assert out["test_accuracy"].tolist() == [0.5, 0.7] and out["train_seconds"].tolist() == [0.9, 1.9]
    assert list(rename_columns(pd.DataFrame({"a": [1]}), renamed).columns) == ["a"]
    # the vae family's own map: its old bare test metrics and train_time_s
    from sweeplab.kit.family import get_family

    vae = get_family("vae")
    assert rename_result({"accuracy": 0.8, "ks_eval": 0.2, "train_time_s": 5.0}, vae.renamed) == {
        "test_accuracy": 0.8, "test_ks_eval": 0.2, "train_seconds": 5.0}


# -- on a real sweep ---------------------------------------------------------------------------
JOB = {
    "name": "own_budget",
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.2},
    "train": {"batch_size": 128, "filters": 4, "n_blocks": 1, "threads": 1, "lr": 0.01},
    "search": {"sampler": "grid", "space": {"epochs": {"type": "categorical", "values": [1, 3]}}},
    "metric": "val_accuracy",
    "scheduler": {"type": "none"},
    "checkpoint": {"every": 1, "keep": 1},
}


@pytest.fixture(scope="module")
def epochs_sweep(ray_session, tmp_path_factory) -> str:
    """A grid over ``epochs`` (1 and 3), no scheduler: both trials finish their own budget."""
    from sweeplab.runner import run_sweep
    from sweeplab.spec import validate_spec

    storage = tmp_path_factory.mktemp("results")
    path, _ = run_sweep(validate_spec(JOB), storage_path=str(storage), verbose=0)
    return path


def test_statuses_use_each_trials_own_budget(epochs_sweep):
    sweep = load_sweep(epochs_sweep)
    df = sweep.dataframe().set_index("epochs")
    assert sorted(df.index) == [1, 3]
    assert df.loc[1, "training_iteration"] == 1 and df.loc[3, "training_iteration"] == 3
    # epochs 1 ran its whole budget: completed, not "stopped" against the longer trial's
    assert df.loc[1, "status"] == "completed" and df.loc[3, "status"] == "completed"
    assert sweep.trial_budget(df.loc[1, "trial_id"]) == 1 and sweep.trial_budget(df.loc[3, "trial_id"]) == 3
    # a job-set ASHA max_t caps the budget: a trial that reached max_t is complete
    capped = load_sweep(epochs_sweep)
    capped.spec = capped.spec.model_copy(update={"scheduler": capped.spec.scheduler.model_copy(
        update={"type": "asha", "max_t": 2})})
    budgets = {row["epochs"]: capped.trial_budget(row["trial_id"]) for _, row in df.reset_index().iterrows()}
    assert budgets == {1: 1, 3: 2}
    assert set(capped.dataframe()["status"]) == {"completed"}
    # both completed trials are ranked, tabled with --status completed and counted in summaries
    assert len(sweep.ranked()) == 2
    only = sweep.table(status=["completed"], fmt="csv").strip().splitlines()
    assert len(only) == 3 and all(",completed," in r for r in only[1:])
    assert sweep.summary()[("val_accuracy", "n")].sum() == 2


#: old name -> current name used to fake a sweep written before a rename
LEGACY = {"accuracy": "test_accuracy", "train_time_s": "train_seconds"}


def _write_old_names(exp: Path) -> None:
    """Rewrite a sweep folder as an older sweeplab wrote it: current metric names replaced by
    the old ones of :data:`LEGACY` in the saved job's objective, in every trial's
    ``result.json`` and ``progress.csv`` and in the last results of Ray's experiment state."""
    old_of = {new: old for old, new in LEGACY.items()}
    job = yaml.safe_load((exp / "sweeplab_job.yaml").read_text())
    (exp / "sweeplab_job.yaml").write_text(yaml.safe_dump({**job, "metric": "accuracy", "mode": "max"}))
    for result in exp.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        result.write_text("".join(json.dumps({old_of.get(k, k): v for k, v in r.items()}) + "\n"
                                  for r in rows))
    for progress in exp.glob("*/progress.csv"):
        with progress.open(newline="") as fh:
            rows = list(csv.reader(fh))
        rows[0] = [old_of.get(k, k) for k in rows[0]]
        with progress.open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    for state_file in exp.glob("experiment_state-*.json"):
        state = json.loads(state_file.read_text())
        for entry in state["trial_data"]:
            meta = json.loads(entry[1])
            meta["last_result"] = {old_of.get(k, k): v for k, v in (meta.get("last_result") or {}).items()}
            entry[1] = json.dumps(meta)
        state_file.write_text(json.dumps(state))


def test_a_sweep_with_old_metric_names_loads_with_current_ones(epochs_sweep, tmp_path, monkeypatch):
    current = load_sweep(epochs_sweep)
    old_dir = tmp_path / "legacy" / Path(epochs_sweep).name
    shutil.copytree(epochs_sweep, old_dir)
    _write_old_names(old_dir)
    raw = [json.loads(line) for line in next(old_dir.glob("*/result.json")).read_text().splitlines()]
    assert "accuracy" in raw[-1] and "test_accuracy" not in raw[-1]  # the rewrite took
    monkeypatch.setattr(current.family, "renamed", {**current.family.renamed, **LEGACY})

    old = load_sweep(str(old_dir))
    assert old.metric == "test_accuracy"  # the job's old objective, by its current name
    df, want = old.dataframe().set_index("epochs"), current.dataframe().set_index("epochs")
    assert "accuracy" not in df and "train_time_s" not in df
    np.testing.assert_allclose(df.loc[[1, 3], "test_accuracy"], want.loc[[1, 3], "test_accuracy"])
    np.testing.assert_allclose(df.loc[[1, 3], "train_seconds"], want.loc[[1, 3], "train_seconds"])
    assert list(df["status"]) == ["completed", "completed"]
    hist = old.history()
    assert {"test_accuracy", "train_seconds"} <= set(hist.columns)
    assert not {"accuracy", "train_time_s"} & set(hist.columns)
    assert len(hist) == 1 + 3 and hist["test_accuracy"].notna().all()
    best = old.best_trial()
    assert best["test_accuracy"] == pytest.approx(want["test_accuracy"].max())
    assert old.best_config()["epochs"] == best["epochs"]
    assert "test_accuracy" in old.table(fmt="csv").splitlines()[0]
