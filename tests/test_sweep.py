"""The sweep engine end to end on real (small) data: Optuna + ASHA, grids with repeats,
divergence, resume after Ctrl-C, tables, best config, TensorBoard files."""
from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sweeplab import load_sweep
from sweeplab.results import USABLE
from sweeplab.cli import main
from sweeplab.runner import SweepError, resume_sweep, run_sweep
from sweeplab.spec import validate_spec

CNN = {
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.2},
    "train": {"epochs": 4, "batch_size": 64, "filters": 8, "n_blocks": 2, "threads": 1},
    "metric": "val_accuracy",
    "checkpoint": {"every": 1, "keep": 1},
}


def job(**changes):
    raw = copy.deepcopy(CNN)
    raw.update(changes)
    return raw


def read_scalars_and_hparams(trial_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(trial_dir))
    acc.Reload()
    hparams = {}
    for content in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for k, v in data.session_start_info.hparams.items():
                hparams[k] = v.number_value if v.HasField("number_value") else v.string_value
    return acc, hparams


@pytest.fixture(scope="module")
def asha_sweep(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("asha")
    spec = validate_spec(job(
        name="asha",
        search={"sampler": "tpe", "seed": 1, "num_samples": 8, "max_concurrent": 2, "space": {
            "lr": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
            "norm": {"type": "categorical", "values": ["none", "batch"]},
            "optimizer": {"type": "categorical", "values": ["adam", "sgd"]},
            "momentum": {"type": "float", "low": 0.5, "high": 0.95, "when": {"optimizer": "sgd"}},
        }},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3},
    ))
    path, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    return load_sweep(path)


def test_asha_stops_weak_trials_and_optuna_samples_conditionals(asha_sweep):
    df = asha_sweep.dataframe()
    assert len(df) == 8
    assert set(df["status"]) <= {"completed", "stopped"}
    stopped = df[df["status"] == "stopped"]
    assert len(stopped) >= 1, df[["status", "training_iteration"]]
    assert (stopped["training_iteration"] < 4).all()
    assert (df.loc[df["status"] == "completed", "training_iteration"] == 4).all()
    # momentum exists exactly for the SGD trials (a conditional parameter)
    sgd = df["optimizer"] == "sgd"
    assert df.loc[sgd, "momentum"].notna().all()
    assert df.loc[~sgd, "momentum"].isna().all()
    # real learning happened: the best trial beats chance (10 classes) by far
    assert df["val_accuracy"].max() > 0.8


def test_best_config_and_tables(asha_sweep, tmp_path):
    df = asha_sweep.dataframe()
    best = asha_sweep.best_config()
    top = df.loc[df["val_accuracy"].idxmax()]
    assert best["lr"] == pytest.approx(top["lr"])
    assert best["epochs"] == 4 and "seed" in best
    asha_sweep.spec.family().Config.model_validate(best)  # ready to re-run
    md = asha_sweep.table()
    assert md.splitlines()[0].startswith("| trial_id") and len(md.splitlines()) == 2 + 8
    grouped = asha_sweep.table(group_by=["norm"], fmt="csv")
    rows = grouped.strip().splitlines()
    assert rows[0].startswith("norm,") and len(rows) == 1 + df["norm"].nunique()
    assert "±" in grouped or (df.groupby("norm").size() == 1).all()
    assert asha_sweep.table(fmt="latex").lstrip().startswith("\\begin{tabular}")
    assert "<table" in asha_sweep.table(fmt="html")
    with pytest.raises(SweepError, match="--format"):
        asha_sweep.table(fmt="docx")
    with pytest.raises(SweepError, match="--group-by"):
        asha_sweep.table(group_by=["nonexistent"])
    # --status completed: only the trials that ran their whole budget (ASHA stopped the rest)
    n_completed = int((df["status"] == "completed").sum())
    assert 0 < n_completed < len(df)
    only = asha_sweep.table(status=["completed"], fmt="csv").strip().splitlines()
    assert len(only) == 1 + n_completed and all(",completed," in r for r in only[1:])
    import pandas as pd

    by_norm = pd.read_csv(io.StringIO(asha_sweep.table(group_by=["norm"], status=["completed"], fmt="csv")))
    assert by_norm["n"].sum() == n_completed  # every group listed; only completed trials averaged
    assert by_norm["excluded"].sum() == len(df) - n_completed
    # a conditional hyperparameter: trials that never sampled it form an "n/a" group, not lost
    by_momentum = asha_sweep.summary(group_by=["optimizer", "momentum"])
    assert by_momentum[("val_accuracy", "n")].sum() == df["val_accuracy"].notna().sum()
    if (df["optimizer"] == "adam").any():
        assert ("adam", "n/a") in by_momentum.index
    with pytest.raises(SweepError, match="--status finished"):
        asha_sweep.table(status=["finished"])
    # the CLI: best prints a job that validates and re-runs the best config
    out = tmp_path / "best.yaml"
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["best", asha_sweep.path]) == 0
    out.write_text(buf.getvalue())
    rerun = validate_spec(yaml.safe_load(out.read_text()))
    assert rerun.train["lr"] == pytest.approx(best["lr"]) and rerun.total_trials() == 1


def test_confirm_job_reruns_the_top_configurations_on_fresh_seeds(asha_sweep, tmp_path):
    import contextlib

    df = asha_sweep.dataframe()
    ranked = df[np.isfinite(df["val_accuracy"])].sort_values("val_accuracy", ascending=False)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["best", asha_sweep.path, "--top", "3", "--repeats", "2"]) == 0
    confirm = validate_spec(yaml.safe_load(buf.getvalue()))
    assert confirm.total_trials() == 3 * 2 and confirm.scheduler.type == "none"
    variants = confirm.search.variants
    assert [v["name"] for v in variants] == [f"trial_{t}" for t in ranked["trial_id"][:3]]
    for v, (_, row) in zip(variants, ranked.head(3).iterrows()):
        assert v["lr"] == pytest.approx(row["lr"]) and v["optimizer"] == row["optimizer"]
        assert ("momentum" in v) == (row["optimizer"] == "sgd")  # conditional kept only where sampled
    # fresh seeds: the confirmation never reuses a seed the selection saw
    assert confirm.train["seed"] > df["seed"].max()
    assert confirm.train["epochs"] == 4
    with pytest.raises(SweepError, match="--top"):
        asha_sweep.confirm_job(top=0)


def test_ray_logs_and_tensorboard_hparams(asha_sweep):
    df = asha_sweep.dataframe()
    for _, row in df.iterrows():
        trial_dir = Path(row["path"])
        lines = (trial_dir / "result.json").read_text().strip().splitlines()
        assert len(lines) == row["training_iteration"]
        assert (trial_dir / "progress.csv").exists()
        acc, hparams = read_scalars_and_hparams(trial_dir)
        curve = acc.Scalars("val/accuracy")
        assert len(curve) == row["training_iteration"]
        assert curve[-1].value == pytest.approx(row["val_accuracy"], rel=1e-5)
        assert hparams["lr"] == pytest.approx(row["lr"])
        assert hparams["norm"] == row["norm"]
        assert "seed" in hparams
    hist = asha_sweep.history()
    assert len(hist) == df["training_iteration"].sum()


def test_grid_variants_repeats_and_statistics(ray_session, storage, asha_sweep):
    spec = validate_spec(job(
        name="grid",
        train={**CNN["train"], "epochs": 2},
        search={"sampler": "grid", "variants": [
            {"name": "adam", "optimizer": "adam", "lr": 0.01},
            {"name": "sgd-tiny-lr", "optimizer": "sgd", "lr": 1e-4, "momentum": 0.0},
        ]},
        scheduler={"type": "none"}, repeats=3,
    ))
    path, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    sweep = load_sweep(path)
    df = sweep.dataframe()
    assert len(df) == 6 and set(df["status"]) == {"completed"}
    for _, group in df.groupby("variant"):
        assert sorted(group["seed"]) == [0, 1, 2]  # repeats are seeds
    for _, row in df.iterrows():  # and Ray's record of each trial's config says the seed it ran with
        assert json.loads((Path(row["path"]) / "params.json").read_text())["seed"] == row["seed"]
        assert group["val_accuracy"].nunique() > 1 or group["val_loss"].nunique() > 1
    summary = sweep.summary()
    assert list(summary.index) == ["adam", "sgd-tiny-lr"]  # sorted by the metric
    assert (summary[("val_accuracy", "n")] == 3).all()
    adam = df[df["variant"] == "adam"]["val_accuracy"]
    assert summary.loc["adam", ("val_accuracy", "mean")] == pytest.approx(adam.mean())
    assert summary.loc["adam", ("val_accuracy", "std")] == pytest.approx(adam.std(ddof=1))
    table = sweep.table(group_by=["variant"])
    assert "±" in table and "sgd-tiny-lr" in table
    cmp = sweep.compare()
    assert cmp.attrs["best"] == "adam"
    assert cmp.iloc[0]["p_value"] < 0.05  # a useless learning rate is clearly worse
    # a metric to minimise: the best group is the one with the LOWEST mean
    by_loss = sweep.compare(metric="val_loss")
    assert by_loss.attrs["best"] == "adam" and (by_loss["diff"] > 0).all()
    # several sweeps of one family: every group of every sweep, named by its sweep
    from sweeplab.results import compare_sweeps

    both = compare_sweeps([sweep, asha_sweep], metric="val_accuracy")
    groups = set(both["group"]) | {both.attrs["best"]}
    assert {"grid: adam", "grid: sgd-tiny-lr"} <= groups
    assert len(groups) == 2 + len(asha_sweep.group_values("val_accuracy"))
    assert all(g.startswith(("grid: ", "asha: ")) for g in groups)
    row = both.set_index("group").loc["grid: sgd-tiny-lr"]
    assert row["mean"] == pytest.approx(df[df["variant"] == "sgd-tiny-lr"]["val_accuracy"].mean())
    assert main(["compare", path, asha_sweep.path, "--metric", "val_accuracy"]) == 0
    # pooled: one group per optimizer, holding the trials of both sweeps
    pooled = compare_sweeps([sweep, asha_sweep], metric="val_accuracy", group_by=["optimizer"], pool=True)
    assert set(pooled["group"]) | {pooled.attrs["best"]} == {"adam", "sgd"}
    both_df = pd.concat([d[d["status"].isin(USABLE)] for d in (df, asha_sweep.dataframe())])
    for _, r in pooled.iterrows():
        vals = both_df.loc[both_df["optimizer"] == r["group"], "val_accuracy"]
        assert r["n"] == len(vals) and r["mean"] == pytest.approx(vals.mean())
    assert main(["compare", path, asha_sweep.path, "--metric", "val_accuracy", "--group-by", "optimizer",
                 "--pool"]) == 0
    # a hyperparameter the job held fixed is still a grouping key (read from the trials' configs)
    by_filters = sweep.summary(group_by=["filters"])
    assert list(by_filters.index) == ["8"] and by_filters[("val_accuracy", "n")].iloc[0] == 6


def test_diverging_trial_is_marked_and_never_best(ray_session, storage):
    spec = validate_spec(job(
        name="diverge",
        train={**CNN["train"], "epochs": 3},
        search={"sampler": "grid", "variants": [
            {"name": "sane", "optimizer": "adam", "lr": 0.01},
            {"name": "exploding", "optimizer": "sgd", "lr": 1.0e20, "momentum": 0.9},
        ]},
        scheduler={"type": "none"},
    ))
    path, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    sweep = load_sweep(path)
    df = sweep.dataframe().set_index("variant")
    assert df.loc["exploding", "status"] == "diverged"
    assert df.loc["sane", "status"] == "completed"
    assert sweep.best_config()["lr"] == 0.01
    assert sweep.summary().loc["exploding", ("excluded", "")] == 1


def test_run_refuses_existing_sweep_and_resume_of_nothing(ray_session, storage, asha_sweep, tmp_path):
    spec = validate_spec(job(name=Path(asha_sweep.path).name, search={"sampler": "grid"},
                             scheduler={"type": "none"}))
    with pytest.raises(SweepError, match="already holds a sweep"):
        run_sweep(spec, storage_path=str(Path(asha_sweep.path).parent))
    with pytest.raises(SweepError, match="holds no sweeplab sweep"):
        resume_sweep(str(tmp_path))
    with pytest.raises(SweepError, match="no sweep named"):
        resume_sweep("never-ran", storage_path=str(storage))


EPOCHS = 12


def _finished_trials(exp: Path, epochs: int = EPOCHS) -> dict[str, int]:
    """trial folder -> number of results, for trials that reported their last epoch (``epochs``)."""
    done = {}
    for result in exp.glob("trial_*/result.json"):
        lines = result.read_text().strip().splitlines()
        try:
            if lines and json.loads(lines[-1])["training_iteration"] == epochs:
                done[result.parent.name] = len(lines)
        except (ValueError, KeyError):  # a line being written
            pass
    return done


def test_resume_after_ctrl_c_keeps_finished_trials(ray_session, storage, tmp_path):
    jobfile = tmp_path / "resume.yaml"
    jobfile.write_text(yaml.safe_dump(job(
        name="resume",
        train={**CNN["train"], "epochs": EPOCHS},
        search={"sampler": "random", "seed": 3, "num_samples": 5, "max_concurrent": 1, "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}},
        scheduler={"type": "none"},
    )))
    env = {k: v for k, v in os.environ.items() if k != "TUNE_DISABLE_SIGINT_HANDLER"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeplab.cli", "run", str(jobfile), "--quiet",
                             "--storage-path", str(storage), "--num-cpus", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exp = storage / "resume"
    deadline = time.time() + 240
    while time.time() < deadline and len(_finished_trials(exp)) < 2 and proc.poll() is None:
        time.sleep(0.5)
    if len(_finished_trials(exp)) < 2:
        proc.kill()
        pytest.fail(f"the sweep did not get going:\n{proc.communicate()[0][-3000:]}")
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=120)
    before = _finished_trials(exp)
    assert len(before) < 5, "interrupted too late to test anything"
    configs_before = {p.parent.name: json.loads(p.read_text()) for p in exp.glob("trial_*/params.json")}

    path, _ = resume_sweep("resume", storage_path=str(storage))
    sweep = load_sweep(path)
    df = sweep.dataframe()
    assert len(df) == 5 and set(df["status"]) == {"completed"}, df[["trial_id", "status"]]
    after = _finished_trials(exp)
    for name, n in before.items():
        assert after[name] == n, f"{name} was re-run"
    for name, config in configs_before.items():  # nothing re-sampled
        assert json.loads((exp / name / "params.json").read_text()) == config
    # an interrupted trial continued from its last saved checkpoint: every epoch is there, in
    # order; epochs reported after that checkpoint was saved may appear twice (Ray's log is
    # at-least-once), and the analysis keeps the re-run's row
    for result in exp.glob("trial_*/result.json"):
        iters = [json.loads(line)["training_iteration"] for line in result.read_text().splitlines()]
        assert sorted(set(iters)) == list(range(1, EPOCHS + 1)) and iters == sorted(iters), iters
        if result.parent.name in before:
            assert len(iters) == EPOCHS
    hist = sweep.history()
    assert len(hist) == 5 * EPOCHS
    assert not hist.duplicated(["trial_id", "training_iteration"]).any()
    lrs = df["lr"].to_numpy()
    assert len(np.unique(lrs)) == 5


def test_plots_and_optuna_study(asha_sweep, tmp_path):
    study = asha_sweep.to_optuna_study()
    df = asha_sweep.dataframe()
    assert len(study.trials) == len(df)
    best = max(t.value for t in study.trials if t.value is not None)
    assert best == pytest.approx(df["val_accuracy"].max())
    paths = asha_sweep.plot(tmp_path / "plots")
    names = {p.name for p in paths}
    assert {"curves.png", "parallel.png", "slice.png", "importances.png"} <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    a_file = tmp_path / "plots.png"
    a_file.write_text("")
    with pytest.raises(SweepError, match="is a file, not a folder"):  # was a FileExistsError traceback
        asha_sweep.plot(a_file)
    with pytest.raises(SweepError, match=r"in the job's metric: \[\.\.\.\]"):  # the job field, not a Python argument
        asha_sweep.pareto_front()


def test_optuna_study_at_one_budget(asha_sweep, tmp_path):
    # ASHA's last results mix budgets; at the grace period (iteration 1) every trial has a value,
    # and it is that iteration's, not the trial's last
    hist = asha_sweep.history()
    at1 = hist[hist["training_iteration"] == 1].set_index("trial_id")["val_accuracy"]
    study = asha_sweep.to_optuna_study(at_iteration=1)
    values = {t.user_attrs["trial_id"]: t.value for t in study.trials}
    assert len(values) == 8 and None not in values.values()
    assert values == pytest.approx(at1.to_dict())
    df = asha_sweep.dataframe().set_index("trial_id")
    changed = [t for t in values if df.loc[t, "training_iteration"] > 1
               and df.loc[t, "val_accuracy"] != values[t]]
    assert changed, "no trial learned after iteration 1: the test proves nothing"
    # at the full budget only the trials ASHA let finish have a value
    full = asha_sweep.to_optuna_study(at_iteration=4)
    finished = {t.user_attrs["trial_id"] for t in full.trials if t.value is not None}
    assert finished == set(df.index[df["training_iteration"] == 4])
    with pytest.raises(SweepError, match="training_iteration 99"):
        asha_sweep.to_optuna_study(at_iteration=99)
    assert main(["plot", str(asha_sweep.path), "--out", str(tmp_path), "--at-iteration", "1"]) == 0
    assert (tmp_path / "importances.png").stat().st_size > 10_000
    assert main(["plot", str(asha_sweep.path), "--out", str(tmp_path), "--at-iteration", "99"]) == 2


def test_one_configuration_with_seeds_gives_one_mean_row(ray_session, storage):
    # no space and no sampler: the train: section runs once per seed (grid is the default)
    spec = validate_spec(job(name="seeds", train={**CNN["train"], "epochs": 1, "lr": 0.01},
                             scheduler={"type": "none"}, repeats=2))
    assert spec.search.sampler == "grid" and spec.total_trials() == 2
    path, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    sweep = load_sweep(path)
    df = sweep.dataframe()
    assert sorted(df["seed"]) == [0, 1] and set(df["config"]) == {"seeds"}
    summary = sweep.summary()  # default grouping: the one configuration
    assert len(summary) == 1 and summary[("val_accuracy", "n")].iloc[0] == 2
    assert summary[("val_accuracy", "mean")].iloc[0] == pytest.approx(df["val_accuracy"].mean())
