"""The contract every registered family keeps, checked through the real shared loop
(``kit.loop.run_trial``) with Ray Tune's report and checkpoint calls captured in-process:

* two iterations run on tiny data of the family's task, made here;
* every declared metric is reported, and nothing undeclared is;
* resuming from the first iteration's checkpoint gives the same second iteration (metrics and
  state) as the uninterrupted run;
* a NaN training loss ends the trial at once as diverged, every declared metric NaN, no checkpoint.

A new family module gets all of this by registering itself and setting ``contract_config``.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.checkpoint import STATE_FILE
from sweeplab.kit.family import family_names, get_family
from sweeplab.kit.loop import run_trial

#: Reported by the loop beside the metrics: facts about the trial, not metrics.
TRIAL_FACTS = {"seed", "node", "node_id", "device"}
#: Wall-clock values: they differ between any two runs.
TIMING = {"iteration_seconds", "train_seconds"}


def tiny_bundle(fam) -> DataBundle:
    """Tiny data of the family's task with a learnable signal: class-dependent means for
    classification, a smooth function for regression, a sine for a series."""
    spec = dict(fam.contract_data)
    task = spec.get("task", fam.data_tasks[0])
    rng = np.random.default_rng(0)
    n_train, n_test, n_val = spec.get("n_train", 48), spec.get("n_test", 24), spec.get("n_val", 24)
    if task == "series":
        t = np.arange(n_train + n_val + n_test, dtype=np.float32)
        s = (np.sin(0.3 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)[:, None]
        return DataBundle(fam.name, s[:n_train], None, s[n_train + n_val:], None, x_val=s[n_train:n_train + n_val],
                          task="series")
    image = task == "classification" and "sample_shape" not in spec
    shape = tuple(spec.get("sample_shape", (1, 8, 8) if image else (3,)))
    dtype = spec.get("dtype", "uint8" if image else "float32")
    k = spec.get("num_classes", 3)
    centres = rng.uniform(0.2, 0.8, size=(k, *shape))

    def split(n):
        y = np.arange(n) % k
        x = np.clip(centres[y] + 0.1 * rng.standard_normal((n, *shape)), 0, 1)
        x = (x * 255).round().astype(np.uint8) if dtype == "uint8" else x.astype(dtype)
        if task == "regression":
            target = np.tanh(x.reshape(n, -1).sum(1, keepdims=True)).astype(np.float32)
            return x, np.repeat(target, int(np.prod(spec.get("target_shape", (1,)))), axis=1)
        return x, (None if task == "unlabelled" else y.astype(np.int64))

    (xtr, ytr), (xte, yte), (xva, yva) = split(n_train), split(n_test), split(n_val)
    return DataBundle(fam.name, xtr, ytr, xte, yte, num_classes=k if task == "classification" else None,
                      x_val=xva, y_val=yva, task=task)


class Captured:
    """Stands in for Ray Tune's ``report``/``get_checkpoint``: keeps every result and a copy of
    every checkpoint folder (Ray's own copy would go to the sweep folder)."""

    def __init__(self, root: Path, resume_from: Path | None = None) -> None:
        self.root, self.resume_from = root, resume_from
        self.results: list[dict] = []
        self.checkpoints: list[Path | None] = []

    def report(self, metrics, checkpoint=None):
        self.results.append(dict(metrics))
        saved = None
        if checkpoint is not None:
            saved = self.root / f"checkpoint_{len(self.results):06d}"
            shutil.copytree(checkpoint.path, saved)
        self.checkpoints.append(saved)

    def get_checkpoint(self):
        from ray import tune

        return None if self.resume_from is None else tune.Checkpoint.from_directory(str(self.resume_from))


def run(monkeypatch, fam, data, tmp: Path, *, resume_from=None, faults="") -> Captured:
    """One trial through the shared loop, in this process."""
    from ray import tune

    cap = Captured(tmp, resume_from)
    tmp.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(tune, "report", cap.report)
    monkeypatch.setattr(tune, "get_checkpoint", cap.get_checkpoint)
    config = {**fam.contract_config, "seed": 3, "threads": 1}
    run_trial(config, data=data, family=fam.name, settings={"fault_inject": faults, "cpus": 1})
    return cap


def same(a, b) -> bool:
    """Equal numbers (NaN equal to NaN) or equal values."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def states_equal(a: dict, b: dict) -> list[str]:
    """Paths of the entries of two checkpoint states that differ (tensors compared exactly)."""
    diffs = []

    def walk(x, y, path):
        if isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and x.shape == y.shape and torch.equal(x, y)):
                diffs.append(path)
        elif isinstance(x, dict):
            if not isinstance(y, dict) or set(x) != set(y):
                diffs.append(path)
            else:
                for k in x:
                    walk(x[k], y[k], f"{path}.{k}")
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y):
                diffs.append(path)
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif not same(x, y):
            diffs.append(path)

    walk(a, b, "state")
    return diffs


@pytest.fixture(params=family_names())
def family(request):
    fam = get_family(request.param)
    assert fam.contract_config, f"{fam.name}: set contract_config (tiny hyperparameters, two iterations)"
    return fam


def test_declared_metrics_are_exactly_the_reported_ones(family, monkeypatch, tmp_path):
    data = tiny_bundle(family)
    cap = run(monkeypatch, family, data, tmp_path / "a")
    assert len(cap.results) == 2, "contract_config must give two iterations"
    declared = set(family.metric_table())
    for result in cap.results:
        reported = set(result) - TRIAL_FACTS
        assert reported - declared == set(), f"reported but not declared: {sorted(reported - declared)}"
        assert declared - reported == set(), f"declared but not reported: {sorted(declared - reported)}"
        assert result["diverged"] == 0
    assert all(c is not None for c in cap.checkpoints), "a checkpoint after every iteration (every: 1)"


def test_resume_from_a_checkpoint_repeats_the_next_iteration_exactly(family, monkeypatch, tmp_path):
    data = tiny_bundle(family)
    whole = run(monkeypatch, family, data, tmp_path / "whole")
    resumed = run(monkeypatch, family, data, tmp_path / "resumed", resume_from=whole.checkpoints[0])
    assert len(resumed.results) == 1, "a resumed trial runs only the iterations after its checkpoint"
    expected, got = whole.results[1], resumed.results[0]
    differ = {k: (expected[k], got.get(k)) for k in expected
              if k not in TIMING | {"node_id"} and not same(expected[k], got.get(k))}
    assert differ == {}, f"{family.name}: the resumed iteration differs: {differ}"
    a = torch.load(whole.checkpoints[1] / STATE_FILE, weights_only=True)
    b = torch.load(resumed.checkpoints[0] / STATE_FILE, weights_only=True)
    assert states_equal(a["family"], b["family"]) == []
    assert a["iteration"] == b["iteration"] == 2


def test_a_nan_loss_ends_the_trial_as_diverged(family, monkeypatch, tmp_path):
    data = tiny_bundle(family)
    cap = run(monkeypatch, family, data, tmp_path / "nan", faults="nan@1")
    assert len(cap.results) == 1 and cap.checkpoints == [None]
    result = cap.results[0]
    assert result["diverged"] == 1
    per_split = [m.name for m in family.metrics if m.split]
    assert per_split and all(math.isnan(result[m]) for m in per_split), "every train/val/test metric is NaN"


def test_the_data_check_refuses_data_of_another_task(family):
    other = next(t for t in ("regression", "unlabelled", "series", "classification") if t not in family.data_tasks)
    stand_in = type("Other", (), {"contract_data": {"task": other}, "data_tasks": (other,), "name": "other"})
    with pytest.raises(ValueError, match=family.name):
        family.check_data(tiny_bundle(stand_in), family.Config.model_validate(family.contract_config))
