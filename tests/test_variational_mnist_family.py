"""The ``variational_mnist`` family (shared/specs/variational_mnist.md) on tiny Binomial clusters:
training, warmups, evaluation cadence, checkpoints (also ones written before the kit), data checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sweeplab.datasets.base import DataBundle
from sweeplab.families.variational_mnist import VariationalMNISTFamily, quantise
from sweeplab.kit.checkpoint import load_checkpoint_dir, save_checkpoint_dir
from sweeplab.kit.family import get_family

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------
# the family
# ------------------------------------------------------------------------------------------------
def mixture_bundle(n_train: int = 900, n_test: int = 300, seed: int = 0) -> DataBundle:
    """Three clusters of 4x4 Binomial(16) images, stored as uint8 0..255 like MNIST."""
    rng = np.random.default_rng(seed)
    probs = np.full((3, 16), 0.1)
    probs[0, :6] = 0.85
    probs[1, 5:11] = 0.85
    probs[2, 10:] = 0.85

    def draw(n):
        labels = rng.integers(0, 3, n)
        counts = rng.binomial(16, probs[labels])
        pixels = np.rint(counts * 255 / 16).astype(np.uint8).reshape(n, 1, 4, 4)
        return pixels, labels.astype(np.int64)

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return DataBundle("mixture", x_tr, y_tr, x_te, y_te, num_classes=3)


def small_config(**kw) -> VariationalMNISTFamily.Config:
    base = dict(n_latent=4, n_clusters=4, steps=300, steps_per_iteration=100, batch_size=64, lr=1e-2,
                lr_warmup_steps=20, kl_warmup_steps=100, mc_samples=4, prior_samples=128,
                r2_samples=500, seed=0)
    return VariationalMNISTFamily.Config(**{**base, **kw})


def test_quantise_recovers_binomial_counts():
    counts = np.arange(17)
    pixels = np.rint(counts * 255 / 16).astype(np.uint8).reshape(17, 1, 1, 1)
    np.testing.assert_array_equal(quantise(pixels)[:, 0], counts)
    assert quantise(np.array([[[[255, 0, 8, 7]]]], np.uint8)).tolist() == [[16, 0, 1, 0]]


def test_config_warmups_and_iterations():
    assert get_family("variational_mnist") is VariationalMNISTFamily
    cfg = VariationalMNISTFamily.Config(steps=300_000, kl_warmup_fraction=0.4)
    assert cfg.kl_warmup() == 120_000 and VariationalMNISTFamily.num_iterations_of(cfg) == 300
    assert VariationalMNISTFamily.Config(steps=1000).kl_warmup() == 400
    assert VariationalMNISTFamily.num_iterations_of(
        VariationalMNISTFamily.Config(steps=2500, steps_per_iteration=1000)) == 3
    with pytest.raises(ValidationError, match="not both"):
        VariationalMNISTFamily.Config(kl_warmup_steps=10, kl_warmup_fraction=0.5)
    with pytest.raises(ValidationError):
        VariationalMNISTFamily.Config(interaction="partial")


def test_training_raises_elbo_and_finds_the_clusters():
    data = mixture_bundle()
    fam = VariationalMNISTFamily(small_config(steps=200), data, torch.device("cpu"))
    before = fam.evaluate_split(data.x_test, data.y_test, torch.Generator().manual_seed(0))
    for it in range(fam.num_iterations):
        train = fam.train_iteration(it)
    after = fam.evaluate(fam.num_iterations - 1)
    assert fam.step == 200 and train["current_beta"] == 1.0 and train["current_lr"] == pytest.approx(1e-2)
    assert after["test_elbo"] > before["elbo"] + 20, (before, after)
    # chance is NMI 0; the spec's initialisation already splits this easy data a little
    assert after["test_nmi"] > 0.85 and after["test_nmi"] > before["nmi"] + 0.05, (before, after)
    assert after["test_cluster_accuracy"] > 0.95, after
    assert after["test_active_clusters"] >= 3
    assert -10 <= after["r2"] <= 1 and train["rho_norm"] > 0


def test_last_iteration_is_short_and_metrics_are_reported():
    data = mixture_bundle(200, 60)
    fam = VariationalMNISTFamily(small_config(steps=130, eval_limit=50, mode="analytical",
                                              interaction="hierarchical"), data, torch.device("cpu"))
    assert fam.num_iterations == 2
    fam.train_iteration(0)
    res = fam.evaluate(0)
    assert fam.step == 100 and res["eval_step"] == 100
    out = fam.train_iteration(1)
    assert fam.step == 130 and out["step"] == 130
    res = fam.evaluate(1)
    assert res["eval_step"] == 130
    assert set(fam.metric_table()) >= {"train_loss", "test_nmi", "r2", "test_active_clusters", "test_elbo",
                                       "rho_norm", "test_cluster_accuracy", "current_beta", "current_lr"}
    assert {"test_nmi", "r2", "test_active_clusters", "test_elbo", "test_cluster_accuracy"} <= set(res)
    grid = fam.media(1)["cluster_means"]
    assert grid.shape[0] == 3 and 0 <= grid.min() and grid.max() <= 1


def test_state_round_trip_through_a_checkpoint(tmp_path):
    data = mixture_bundle(300, 60)
    cfg = small_config(steps=60, steps_per_iteration=20)
    a = VariationalMNISTFamily(cfg, data, torch.device("cpu"))
    a.train_iteration(0)
    a.evaluate(0)
    save_checkpoint_dir(tmp_path, a, 1)
    b = VariationalMNISTFamily(small_config(steps=60, steps_per_iteration=20, seed=5), data, torch.device("cpu"))
    assert load_checkpoint_dir(tmp_path, b)[0] == 1
    assert b.step == 20 and b.eval_cache.last == a.eval_cache.last
    assert len(b.optimizer.state) == len(a.optimizer.state) > 0
    out_a, out_b = a.train_iteration(1), b.train_iteration(1)
    assert out_a == out_b
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)


def test_lr_warmup_follows_the_runs_formula():
    # lr * min(1, (step + 1) / W), now through the kit's LRSchedule (LinearLR)
    data = mixture_bundle(100, 30)
    fam = VariationalMNISTFamily(small_config(steps=8, steps_per_iteration=1, lr_warmup_steps=5),
                                 data, torch.device("cpu"))
    lrs = [fam.train_iteration(it)["current_lr"] for it in range(8)]
    assert lrs == pytest.approx([1e-2 * min(1.0, (k + 1) / 5) for k in range(8)], rel=1e-9)


def test_a_checkpoint_written_before_the_kit_resumes(tmp_path):
    # no schedule state, an optimizer without the scheduler's initial_lr, metrics under old names
    from sweeplab.kit.checkpoint import STATE_FILE

    data = mixture_bundle(300, 60)
    cfg = small_config(steps=60, steps_per_iteration=20, lr_warmup_steps=30)
    a = VariationalMNISTFamily(cfg, data, torch.device("cpu"))
    a.train_iteration(0)
    a.evaluate(0)
    save_checkpoint_dir(tmp_path, a, 1)
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    fam = state["family"]
    del fam["schedule"]
    for group in fam["optimizer"]["param_groups"]:
        group.pop("initial_lr")
    old_name = {new: old for old, new in VariationalMNISTFamily.renamed.items()}
    fam["last_eval"] = {old_name.get(k, k): v for k, v in fam["last_eval"].items()}
    assert "nmi" in fam["last_eval"]
    torch.save(state, tmp_path / STATE_FILE)

    b = VariationalMNISTFamily(small_config(steps=60, steps_per_iteration=20, lr_warmup_steps=30, seed=5),
                               data, torch.device("cpu"))
    assert load_checkpoint_dir(tmp_path, b)[0] == 1
    assert b.eval_cache.last == a.eval_cache.last
    assert b.schedule.current_lr == pytest.approx(a.schedule.current_lr, rel=1e-12)
    out_a, out_b = a.train_iteration(1), b.train_iteration(1)
    assert out_b == pytest.approx(out_a, rel=1e-6)
    assert out_b["current_lr"] == pytest.approx(1e-2)  # past the warmup at step 39


def test_rejects_unusable_data():
    data = mixture_bundle(30, 10)
    bad = DataBundle("tab", np.zeros((5, 3), np.float32), np.zeros(5, np.int64),
                     np.zeros((5, 3), np.float32), np.zeros(5, np.int64), num_classes=1)
    with pytest.raises(ValueError, match="uint8 images"):
        VariationalMNISTFamily(small_config(), bad, torch.device("cpu"))
    unlabelled = DataBundle("u", data.x_train, data.y_train, data.x_test, -np.ones(10, np.int64), 3)
    with pytest.raises(ValueError, match="label"):
        VariationalMNISTFamily(small_config(), unlabelled, torch.device("cpu"))
