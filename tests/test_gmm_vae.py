"""The ``gmm_vae`` family and its dense VAE (``sweeplab.models.gmm_vae``): the loss against its
closed form, the ceilings against the metrics computed directly, the scaler's exact change of
variables, a short training run that learns the modes, and clear refusals of unusable data."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from sweeplab.datasets.base import DataBundle
from sweeplab.datasets.synthetic import gmm3d
from sweeplab.families.gmm_vae import GMMVAEFamily, column_scaler
from sweeplab.kit.loop import build_family
from sweeplab.metrics import samples as sm
from sweeplab.models.gmm_vae import DenseVAE, kl_standard_normal, recon_nll

CPU = torch.device("cpu")


def family(data, **cfg) -> GMMVAEFamily:
    """The family as a trial builds it (seeded, one thread)."""
    return build_family("gmm_vae", {"threads": 1, **cfg}, data, device=CPU)


def test_gaussian_loss_and_kl_match_their_closed_forms():
    torch.manual_seed(0)
    model = DenseVAE(3, 2, 8, 2, likelihood="gaussian")
    x = torch.randn(5, 3)
    params = torch.randn(5, 3)
    var_x = 0.3
    expected = torch.distributions.Normal(params, math.sqrt(var_x)).log_prob(x).sum(1)
    assert torch.allclose(recon_nll(model, params, x, var_x), -expected, atol=1e-5)
    mu, var = torch.randn(5, 2), torch.rand(5, 2) + 0.1
    q = torch.distributions.Normal(mu, var.sqrt())
    p = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    assert torch.allclose(kl_standard_normal(mu, var), torch.distributions.kl_divergence(q, p).sum(1), atol=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical"])
def test_discrete_likelihoods_are_normalised_log_probabilities(likelihood):
    torch.manual_seed(0)
    model = DenseVAE(4, 2, 8, 1, likelihood=likelihood, num_vals=5)
    z = torch.randn(3, 2)
    params = model.decode(z)
    x = torch.tensor([[0.0, 0.25, 1.0, 0.5]]).repeat(3, 1) if likelihood == "categorical" else \
        torch.tensor([[0.0, 1.0, 1.0, 0.0]]).repeat(3, 1)
    if likelihood == "bernoulli":
        expected = torch.distributions.Bernoulli(logits=params).log_prob(x).sum(1)
    else:
        expected = torch.distributions.Categorical(logits=params).log_prob((x * 4).round().long()).sum(1)
    assert torch.allclose(recon_nll(model, params, x, 1.0), -expected, atol=1e-5)


def test_ceilings_are_the_metrics_of_the_true_test_draw():
    data = gmm3d(data_seed=0, n_train=300, n_test=300)
    fam = family(data, epochs=1, n_gen=300)
    direct = sm.mode_metrics(data.x_test, data.meta["means"], data.meta["weights"])
    extra = fam.extra_results()
    assert extra["hq_fraction_ceiling"] == pytest.approx(direct["hq_fraction"])
    assert extra["modes_covered_0p1_ceiling"] == direct["modes_covered"] == 10
    assert extra["mode_kl_ceiling"] == pytest.approx(direct["mode_kl"])
    assert extra["elbow_k_raw_ceiling"] == sm.elbow_k(data.x_test, seed=0)


def test_standardising_is_an_exact_change_of_variables():
    """Data c*x trained with the standard scaler sees the same scaled points as x: every metric
    agrees, except the ELBO (shifted by -D log c: the density's Jacobian) and the MSE (times c²)."""
    data = gmm3d(data_seed=1, n_train=200, n_test=200)
    data = dataclasses.replace(data, meta={})       # mixture estimated from labels: scales with the data
    c = 8.0                                          # a power of 2: scaling is exact in floating point
    big = dataclasses.replace(data, x_train=data.x_train * c, x_test=data.x_test * c)
    cfg = dict(epochs=3, eval_every=1, n_gen=200, scaler="standard", seed=2)
    small_fam, big_fam = family(data, **cfg), family(big, **cfg)
    for it in range(3):
        small_fam.train_iteration(it)
        big_fam.train_iteration(it)
    a, b = small_fam.evaluate(2), big_fam.evaluate(2)
    assert b["test_elbo"] == pytest.approx(a["test_elbo"] - 3 * math.log(c), abs=1e-3)
    assert b["test_mse"] == pytest.approx(a["test_mse"] * c * c, rel=1e-4)
    for k in ("hq_fraction", "modes_covered_0p1", "test_kl", "test_latent_nmi", "spread_ratio"):
        assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k


def test_column_scaler_kinds():
    x = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    shift, scale = column_scaler(x, "minmax")
    assert np.allclose(((x - shift) / scale)[:, 0], [0, 0.5, 1]) and scale[1] == 1.0
    shift, scale = column_scaler(x, "standard")
    assert np.allclose(shift, [2, 5]) and np.allclose(scale, [np.std([0, 2, 4]), 1.0])


def test_short_training_learns_most_modes_and_draws_figures():
    data = gmm3d(data_seed=0)
    fam = family(data, epochs=30, eval_every=30, seed=0)
    for it in range(30):
        fam.train_iteration(it)
    out = fam.evaluate(29)
    assert out["modes_captured"] >= 8 and out["hq_fraction"] > 0.5
    assert out["test_active_units"] == 2 and out["test_latent_nmi"] > 0.6
    assert out["mode_score"] == out["modes_covered_0p1"] + out["hq_fraction"]
    images = fam.media(29)
    assert set(images) == {"samples", "latent", "latent_tsne"}
    assert all(v.ndim == 3 and v.shape[0] == 3 and 0 <= v.min() and v.max() <= 1 for v in images.values())


def test_images_and_unlabelled_points_are_refused():
    cfg = GMMVAEFamily.Config()
    imgs = DataBundle("digits", np.zeros((20, 1, 4, 4), np.uint8), np.zeros(20, np.int64),
                      np.zeros((20, 1, 4, 4), np.uint8), np.zeros(20, np.int64), num_classes=2)
    with pytest.raises(ValueError, match="gmm_vae trains on vectors"):
        GMMVAEFamily.check_data(imgs, cfg)
    pts = DataBundle("pts", np.zeros((20, 3), np.float32), -np.ones(20, np.int64),
                     np.zeros((20, 3), np.float32), np.zeros(20, np.int64), num_classes=2)
    with pytest.raises(ValueError, match="true component"):
        GMMVAEFamily.check_data(pts, cfg)


def test_course_vae_family_learns_digits_and_draws_grids(tmp_path):
    """``vae_mnist`` (the same DenseVAE on flattened images): 15 epochs on scikit-learn's digits
    raise the test ELBO and give samples the reference classifier reads as most digits, and samples, reconstructions and scores have the right shapes."""
    from sweeplab.datasets.base import load_dataset

    data = load_dataset("digits")
    fam = build_family("vae_mnist", {"threads": 1, "latent_dim": 8, "middle_dim": 64, "batch_size": 64, "epochs": 15,
                                     "lr": 3e-3, "n_samples": 300, "reference_dir": str(tmp_path)}, data, device=CPU)
    first = fam.evaluate(0)
    for it in range(15):
        fam.train_iteration(it)
    last = fam.evaluate(14)
    assert last["test_elbo"] > first["test_elbo"] + 5
    assert last["test_elbo"] == pytest.approx(-(last["test_recon_nll"] + last["test_kl"]))
    assert last["class_coverage"] >= 8 and last["fd_classifier"] < first["fd_classifier"]
    assert fam.generate(7, torch.Generator().manual_seed(0)).shape == (7, 1, 8, 8)
    grids = fam.media(14)
    assert grids["reconstructions"].shape[0] == 3 and grids["prior_samples"].shape[0] == 3
