"""The ``rbm`` family and model against scikit-learn's BernoulliRBM: free energy, pseudo-likelihood
on the same weights and flipped bits, and persistent CD-1 updates on the same random numbers; CD-k
lowering the reconstruction error on a toy dataset; inpainting masks; the family's metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neural_network import BernoulliRBM as SklearnRBM

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.loop import build_family

#: the tests run on the CPU whatever the machine has (build_family defaults to CUDA where there is one)
CPU = torch.device("cpu")
from sweeplab.models.rbm import BernoulliRBM, inpaint, row_mask, torch_uniform


def fitted_pair(d: int = 20, h: int = 7, seed: int = 0) -> tuple[BernoulliRBM, SklearnRBM]:
    """Our RBM and sklearn's with the same random (non-trivial) weights."""
    rng = np.random.default_rng(seed)
    ours = BernoulliRBM(d, h)
    ours.weight.data = torch.from_numpy(rng.normal(0, 0.5, (h, d)))
    ours.hidden_bias.data = torch.from_numpy(rng.normal(0, 0.5, h))
    ours.visible_bias.data = torch.from_numpy(rng.normal(0, 0.5, d))
    sk = SklearnRBM(n_components=h, random_state=11)
    sk.components_ = ours.weight.numpy().copy()
    sk.intercept_hidden_ = ours.hidden_bias.numpy().copy()
    sk.intercept_visible_ = ours.visible_bias.numpy().copy()
    sk.n_features_in_ = d
    return ours, sk


def test_free_energy_and_pseudo_likelihood_equal_sklearns_on_the_same_weights_and_bits():
    ours, sk = fitted_pair()
    rng = np.random.default_rng(1)
    for v in ((rng.random((50, 20)) < 0.4).astype(np.float64), rng.random((50, 20))):  # binary and intensities
        np.testing.assert_allclose(ours.free_energy(torch.from_numpy(v)).numpy(), sk._free_energy(v), rtol=1e-12)
        flips = np.random.RandomState(11).randint(0, 20, 50)  # what score_samples draws with random_state=11
        pl = ours.pseudo_likelihood(torch.from_numpy(v), torch.from_numpy(flips)).numpy()
        np.testing.assert_allclose(pl, sk.score_samples(v), rtol=1e-12)
        assert (pl < 0).all()


def test_free_energy_is_minus_log_of_the_sum_over_hidden_states():
    ours, _ = fitted_pair(d=4, h=3)
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    hs = torch.tensor([[(i >> j) & 1 for j in range(3)] for i in range(8)], dtype=torch.float64)
    energy = -(v @ ours.visible_bias)[:, None] - (hs @ ours.hidden_bias)[None] - v @ ours.weight.T @ hs.T
    assert torch.allclose(ours.free_energy(v), -torch.logsumexp(-energy, dim=1), atol=1e-12)


def test_persistent_cd1_is_sklearns_partial_fit_on_the_same_random_numbers():
    x = (np.random.RandomState(0).rand(10, 12) > 0.5).astype(np.float64)
    sk = SklearnRBM(n_components=5, learning_rate=0.05, batch_size=10, random_state=3)
    rs = np.random.RandomState(3)  # sklearn draws the initial weights, then the uniforms, from it
    ours = BernoulliRBM(12, 5)
    ours.weight.data = torch.from_numpy(rs.normal(0, 0.01, (5, 12)))
    uniform = lambda shape: torch.from_numpy(rs.uniform(size=shape))  # noqa: E731
    chain = torch.zeros(10, 5, dtype=torch.float64)
    for _ in range(3):
        sk.partial_fit(x)
        chain = ours.cd_step(torch.from_numpy(x), 0.05, uniform, k=1, chain=chain)
        np.testing.assert_allclose(ours.weight.numpy(), sk.components_, atol=1e-15)
        np.testing.assert_allclose(ours.hidden_bias.numpy(), sk.intercept_hidden_, atol=1e-15)
        np.testing.assert_allclose(ours.visible_bias.numpy(), sk.intercept_visible_, atol=1e-15)
        assert np.array_equal(chain.numpy(), sk.h_samples_)


def bars_and_stripes(n: int, side: int = 4, seed: int = 0) -> np.ndarray:
    """Toy data: random horizontal bars or vertical stripes on a side x side grid, [n, side^2] in {0, 1}."""
    rng = np.random.default_rng(seed)
    lines = rng.random((n, side)) < 0.5
    img = np.where(rng.random(n)[:, None, None] < 0.5, lines[:, :, None], lines[:, None, :])
    return np.broadcast_to(img, (n, side, side)).reshape(n, -1).astype(np.float64)


@pytest.mark.parametrize("k,persistent", [(1, False), (3, False), (1, True)])
def test_cd_lowers_the_reconstruction_error_on_a_toy_dataset(k, persistent):
    x = torch.from_numpy(bars_and_stripes(400))
    gen = torch.Generator().manual_seed(0)
    rbm = BernoulliRBM(16, 12, gen)
    before = float(((rbm.reconstruct(x) - x) ** 2).mean())
    chain = torch.zeros(20, 12, dtype=torch.float64) if persistent else None
    for _ in range(20):
        for i in range(0, 400, 20):
            new = rbm.cd_step(x[i:i + 20], 0.5, torch_uniform(gen), k=k, chain=chain)
            chain = new if persistent else None
    after = float(((rbm.reconstruct(x) - x) ** 2).mean())
    assert before > 0.24 and after < 0.2 * before  # an untrained RBM reconstructs every pixel as ~0.5


def test_row_masks_and_inpainting_keep_the_observed_pixels():
    assert row_mask(4, 3, 1, "top").reshape(4, 3)[:, 0].tolist() == [True, False, False, False]
    assert row_mask(4, 3, 2, "middle").reshape(4, 3)[:, 0].tolist() == [False, True, True, False]
    assert row_mask(4, 3, 1, "bottom").reshape(4, 3)[:, 0].tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="between 1 and the image height 4"):
        row_mask(4, 3, 5, "top")
    x = torch.from_numpy(bars_and_stripes(8))
    missing = row_mask(4, 4, 2, "top")
    out = inpaint(BernoulliRBM(16, 5, torch.Generator().manual_seed(0)), x, missing, 3,
                  torch_uniform(torch.Generator().manual_seed(1)))
    assert torch.equal(out[:, ~missing], x[:, ~missing]) and bool(((out >= 0) & (out <= 1)).all())


def toy_bundle(n: int = 300) -> DataBundle:
    x = (bars_and_stripes(n + 100, seed=2).reshape(-1, 1, 4, 4) * 255).astype(np.uint8)
    return DataBundle("toy", x[:n], None, x[n:], None, task="unlabelled")


def test_family_trains_and_reports_sklearns_pseudo_likelihood_for_its_weights():
    data = toy_bundle()
    fam = build_family("rbm", {"n_components": 12, "learning_rate": 0.1, "batch_size": 10, "epochs": 10,
                               "inpaint_rows": 1, "inpaint_steps": 20, "seed": 5}, data, device=CPU)
    first = {**fam.train_iteration(0), **fam.evaluate(0)}
    for it in range(1, 10):
        last = {**fam.train_iteration(it), **fam.evaluate(it)}
    assert last["train_recon_mse"] < first["train_recon_mse"] and last["test_recon_mse"] < first["test_recon_mse"]
    assert last["test_pseudo_likelihood"] > first["test_pseudo_likelihood"]
    assert last["test_inpaint_mse"] < 0.25  # better than guessing 0.5 for every removed pixel
    sk = SklearnRBM(n_components=12, random_state=5)
    sk.components_, sk.intercept_hidden_ = fam.rbm.weight.numpy(), fam.rbm.hidden_bias.numpy()
    sk.intercept_visible_, sk.n_features_in_ = fam.rbm.visible_bias.numpy(), 16
    expected = sk.score_samples(data.x_test.reshape(100, -1) / 255.0).mean()
    assert last["test_pseudo_likelihood"] == pytest.approx(expected, rel=1e-12)
    assert fam.extra_results() == {"num_params": 12 * 16 + 12 + 16}
    h = sk.transform(data.x_test.reshape(100, -1) / 255.0)  # sklearn's p(h | v)
    assert last["test_active_units"] == float((h.var(0) > 0.01).sum()) and last["test_active_units"] >= 1
    fam.rbm.weight.data.fill_(0.0)  # a collapsed RBM: every hidden unit the same constant
    assert fam._evaluate_splits(9)["test_active_units"] == 0


def test_family_media_and_bad_data():
    fam = build_family("rbm", {"n_components": 4, "inpaint_rows": 1, "inpaint_steps": 2,
                               "sample_steps": [1, 3]}, toy_bundle(40), device=CPU)
    media = fam.media(0)
    assert set(media) == {"filters", "gibbs_samples", "inpainting"}
    assert media["gibbs_samples"].shape[0] == 3 and all(float(m.min()) >= 0 for m in media.values())
    with pytest.raises(ValueError, match="inpaint_rows=9"):
        build_family("rbm", {"inpaint_rows": 9}, toy_bundle(40), device=CPU)
    rgb = DataBundle("rgb", np.zeros((4, 3, 4, 4), np.uint8), None, np.zeros((2, 3, 4, 4), np.uint8), None)
    with pytest.raises(ValueError, match="one-channel images"):
        build_family("rbm", {}, rgb, device=CPU)
