"""Several objectives: the spec's checks, Optuna's multi-objective samplers behind Ray Tune, the
exact Pareto front of a planted problem (checked against Optuna's own), ``table --pareto`` and
``best --pick`` on a tiny NSGA-II sweep."""
from __future__ import annotations

import copy
import io

import numpy as np
import pandas as pd
import pytest
import yaml

from sweeplab import load_sweep
from sweeplab.cli import main
from sweeplab.results.pareto import parse_pick, pareto_mask
from sweeplab.results.sweep import SweepError
from sweeplab.runner import build_scheduler, build_search, run_sweep
from sweeplab.spec import SpecError, validate_spec

JOB = {
    "name": "pareto",
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.25},
    "train": {"epochs": 1, "batch_size": 64, "n_blocks": 1, "threads": 1, "lr": 0.01},
    "search": {"sampler": "nsga2", "seed": 0, "num_samples": 4, "max_concurrent": 2,
               "space": {"filters": {"type": "categorical", "values": [2, 4, 8, 16]}}},
    "metric": ["val_accuracy", "num_params"],
    "mode": ["max", "min"],
    "scheduler": {"type": "none"},
    "checkpoint": {"every": 1, "keep": 1},
}


def spec(**changes):
    raw = copy.deepcopy(JOB)
    raw.update(changes)
    return validate_spec(raw)


def test_planted_front_is_exact_and_agrees_with_optuna():
    import optuna

    x = np.linspace(0, 1, 7)
    front = np.c_[x, 1 - x]  # minimise both: every point of the line is optimal
    dominated = front[1:-1] + [0.1, 0.05]  # each worse than its front point in both
    weak = np.array([[0.0, 1.2], [front[3, 0], front[3, 1] + 1e-9]])  # worse in one objective only
    points = np.r_[front, dominated, weak, front[2:3]]  # and a duplicate of a front point
    mask = pareto_mask(points, ["min", "min"])
    assert mask.tolist() == [True] * 7 + [False] * 5 + [False, False] + [True]
    # the same with one objective maximised: flip its sign
    assert pareto_mask(points * [1, -1], ["min", "max"]).tolist() == mask.tolist()
    study = optuna.create_study(directions=["minimize", "minimize"])
    for i, values in enumerate(points):
        study.add_trial(optuna.trial.create_trial(values=list(values), params={}, distributions={},
                                                  user_attrs={"i": i}))
    assert sorted(t.user_attrs["i"] for t in study.best_trials) == np.flatnonzero(mask).tolist()


def test_spec_takes_lists_and_refuses_what_cannot_rank_a_front():
    s = spec()
    assert s.multi_objective and s.objectives() == ["val_accuracy", "num_params"]
    assert s.resolved_modes() == ["max", "min"] and s.primary_metric == "val_accuracy"
    assert spec(mode=None).resolved_modes() == ["max", "min"]  # each metric's own direction
    assert spec(metric=["val_accuracy"], mode=None).metric == "val_accuracy"  # one objective stays a string
    with pytest.raises(SpecError, match="scheduler: asha ranks trials on one metric at each rung, which cannot "
                                        "rank a Pareto front"):
        spec(scheduler={"type": "asha"})
    cma = copy.deepcopy(JOB)
    cma["train"].pop("lr")
    cma["search"] = {"sampler": "cmaes", "num_samples": 4, "space": {"lr": {"type": "float", "low": 1e-3,
                                                                            "high": 1e-1}}}
    with pytest.raises(SpecError, match="cmaes optimises one objective"):
        validate_spec(cma)
    with pytest.raises(SpecError, match="2 modes for 3 metrics"):
        spec(metric=["val_accuracy", "num_params", "val_loss"])
    with pytest.raises(SpecError, match="val_acc"):
        spec(metric=["val_acc", "num_params"])
    for sampler in ("nsga2", "tpe", "gp", "qmc", "random"):
        alg, _ = build_search(spec(search={**JOB["search"], "sampler": sampler}))
        assert alg.metric == ["val_accuracy", "num_params"] and alg.mode == ["max", "min"]
        assert [d.name for d in alg._ot_study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert build_scheduler(spec()) is None


def test_pick_rules_parse_or_say_how():
    assert parse_pick("min num_params within 0.5% of val_accuracy") == ("min", "num_params", 0.5, True,
                                                                       "val_accuracy")
    assert parse_pick("max val_accuracy") == ("max", "val_accuracy", None, False, None)
    assert parse_pick("min num_params within 0.01 of val_accuracy")[2:4] == (0.01, False)
    with pytest.raises(SweepError, match="min\\|max METRIC"):
        parse_pick("smallest model please")


@pytest.fixture(scope="module")
def mo_sweep(ray_session, tmp_path_factory):
    path, _ = run_sweep(spec(), storage_path=str(tmp_path_factory.mktemp("mo")), verbose=0)
    return load_sweep(path)


def test_nsga2_sweep_front_table_and_pick(mo_sweep, capsys):
    df = mo_sweep.dataframe()
    assert len(df) == 4 and (df["status"] == "completed").all()
    # the front by brute force: no other trial at least as good on both and better on one
    acc, size = df["val_accuracy"].to_numpy(), df["num_params"].to_numpy()
    brute = {df.loc[i, "trial_id"] for i in range(len(df))
             if not any(acc[j] >= acc[i] and size[j] <= size[i] and (acc[j] > acc[i] or size[j] < size[i])
                        for j in range(len(df)))}
    front = mo_sweep.pareto_front()
    assert set(front["trial_id"]) == brute and len(brute) >= 1
    assert front["val_accuracy"].is_monotonic_decreasing  # sorted by the first objective
    assert main(["table", mo_sweep.path, "--pareto", "--format", "csv"]) == 0
    shown = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(shown["trial_id"]) == brute
    # pick: the smallest model within 50 % of the best accuracy, by hand
    best_acc = acc.max()
    ok = df[df["val_accuracy"] >= best_acc - 0.5 * best_acc]
    expected = ok.sort_values("num_params", kind="stable").iloc[0]
    assert mo_sweep.pick("min num_params within 50% of val_accuracy")["trial_id"] == expected["trial_id"]
    assert mo_sweep.pick("max val_accuracy")["val_accuracy"] == best_acc
    assert main(["best", mo_sweep.path, "--pick", "min num_params within 50% of val_accuracy",
                 "--config-only"]) == 0
    picked = yaml.safe_load(capsys.readouterr().out)
    assert picked["filters"] == int(expected["filters"])
    assert main(["best", mo_sweep.path]) == 2
    assert "Pareto front" in capsys.readouterr().err
    with pytest.raises(SweepError, match="no single best trial"):
        mo_sweep.load_model()
    assert mo_sweep.load_model(mo_sweep.pick("max val_accuracy")).config["filters"] == int(
        df.loc[df["val_accuracy"].idxmax(), "filters"])
