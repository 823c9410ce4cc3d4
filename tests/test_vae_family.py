"""The `vae` family: model shapes, the multi-loss, probes, checkpointing and short real trainings."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweeplab.datasets.base import DataBundle
from sweeplab.metrics import vae as vm
from sweeplab.models.vae import DerpVAE, LossWeights, multi_loss
from sweeplab.families.vae import VAEFamily
from sweeplab.kit.checkpoint import load_checkpoint_dir, save_checkpoint_dir
from sweeplab.kit.family import get_family

CPU = torch.device("cpu")
QUANTITIES = {"ks_probe", "ks_eval", "ks_two_sided", "kl", "accuracy", "activation_rate", "active_units",
              "class_separation", "recon_bce", "elbo"}
EVAL_KEYS = {f"test_{q}" for q in QUANTITIES}
VAL_KEYS = {f"val_{q}" for q in QUANTITIES}
#: prior samples scored by the reference classifier (issue 15), reported with every evaluation
SAMPLE_KEYS = {"class_coverage", "class_kl", "fd_classifier"}
ALL_KEYS = EVAL_KEYS | {"train_loss"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def random_bundle(shape=(3, 32, 32), n_train=96, n_test=40, classes=10, seed=0) -> DataBundle:
    rng = np.random.default_rng(seed)
    return DataBundle("random", rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                      rng.integers(0, classes, n_train).astype(np.int64),
                      rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                      rng.integers(0, classes, n_test).astype(np.int64), classes)


def stripes_bundle(n=256, seed=0, flip=0.02) -> DataBundle:
    """A learnable task: 28x28 binary images of horizontal (class 0) or vertical (class 1)
    stripes of width 2 with a random phase, with a share ``flip`` of pixels inverted."""
    rng = np.random.default_rng(seed)

    def make(m):
        y = rng.integers(0, 2, m)
        phase = rng.integers(0, 4, m)
        grid = np.arange(28)
        img = np.empty((m, 1, 28, 28))
        for k in range(m):
            wave = ((grid + phase[k]) // 2) % 2
            img[k, 0] = wave[:, None] * np.ones(28) if y[k] == 0 else np.ones((28, 1)) * wave[None, :]
        img = np.where(rng.random(img.shape) < flip, 1 - img, img)
        return (img * 255).astype(np.uint8), y.astype(np.int64)

    x_tr, y_tr = make(n)
    x_te, y_te = make(n // 4)
    return DataBundle("stripes", x_tr, y_tr, x_te, y_te, 2)


def family(data, **overrides) -> VAEFamily:
    cfg = dict(hidden_dim=32, latent_dim=4, batch_size=16, epochs=3)
    cfg.update(overrides)
    return VAEFamily(VAEFamily.Config(**cfg), data, CPU)


def test_registered_and_config_validation():
    assert get_family("vae") is VAEFamily
    with pytest.raises(ValueError):
        VAEFamily.Config(probes="sometimes")
    with pytest.raises(ValueError):
        VAEFamily.Config(lamda_ks=1.0)  # typo: unknown keys are rejected
    with pytest.raises(ValueError):
        VAEFamily.Config(hidden_dim=33)
    assert set(VAEFamily.metric_table()) >= ALL_KEYS | VAL_KEYS | {"num_params", "train_seconds"}
    assert all(m.mode in ("min", "max") for m in VAEFamily.metrics)
    # sweeps written before the metric convention load under the new names
    assert {VAEFamily.renamed[q] for q in QUANTITIES} == EVAL_KEYS
    assert VAEFamily.renamed["train_time_s"] == "train_seconds"


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_conv_arch_restores_input_shape(shape):
    model = DerpVAE(shape, 10, arch="conv", hidden_dim=32, latent_dim=6)
    out = model(torch.rand(2, *shape))
    assert out.x_hat.shape == (2, *shape)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (2, 6)
    assert out.logits.shape == (2, 10)
    assert float(out.x_hat.detach().min()) > 0 and float(out.x_hat.detach().max()) < 1


def test_multi_loss_is_the_spec_formula():
    model = DerpVAE((1, 8, 8), 3, hidden_dim=16, latent_dim=3).eval()
    x, y = torch.rand(10, 1, 8, 8), torch.randint(0, 3, (10,))
    out = model(x, eps=torch.randn(10, 3))
    directions = vm.probes(4, 3, torch.Generator().manual_seed(0))
    w = LossWeights(beta=2.0, lambda_ks=0.7)
    terms = multi_loss(model, out, x, y, directions, w)
    bce_sum = F.binary_cross_entropy(out.x_hat, x, reduction="sum")
    kl_sum = -0.5 * torch.sum(1 + out.logvar - out.mu**2 - out.logvar.exp())
    expected = (bce_sum / 10 + 2.0 * kl_sum / 10 + 0.7 * vm.ks_probe(out.z, directions)
                + 0.5 * F.cross_entropy(out.logits, y)
                + 0.3 * F.mse_loss(model.perceptual(x), model.perceptual(out.x_hat)))
    torch.testing.assert_close(terms["loss"], expected)
    with pytest.raises(ValueError):
        multi_loss(model, out, x, y, None, w)


def test_derp_loss_has_nonzero_finite_encoder_gradients():
    model = DerpVAE((3, 16, 16), 10, hidden_dim=32, latent_dim=4)
    out = model(torch.rand(64, 3, 16, 16))
    loss = vm.ks_probe(out.z, vm.probes(5, 4, torch.Generator().manual_seed(0)))
    loss.backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name
    # the DERP term alone reaches neither the decoder nor the classifier
    assert all(p.grad is None for p in model.decoder.parameters())


def test_fixed_probes_stay_fixed_and_survive_checkpoints(tmp_path: Path):
    data = random_bundle()
    fam = family(data, lambda_ks=1.0, num_probes=3, probes="fixed")
    assert fam.fixed_probes is None
    fam.train_iteration(0)
    first = fam.fixed_probes.clone()
    assert first.shape == (3, 4)
    fam.train_iteration(1)
    assert torch.equal(fam.fixed_probes, first)
    save_checkpoint_dir(tmp_path, fam, 2)
    restored = family(data, lambda_ks=1.0, num_probes=3, probes="fixed", seed=123)
    load_checkpoint_dir(tmp_path, restored)  # torch.load(weights_only=True)
    assert torch.equal(restored.fixed_probes, first)
    restored.train_iteration(2)
    assert torch.equal(restored.fixed_probes, first)

    resampling = family(data, lambda_ks=1.0, num_probes=3, probes="resample")
    assert not torch.equal(resampling._training_probes(), resampling._training_probes())


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path):
    data = random_bundle(n_train=64, n_test=24)
    torch.manual_seed(7)
    straight = family(data, lambda_ks=1.0, probes="resample", epochs=2)
    r0 = straight.train_iteration(0)
    straight.evaluate(0)
    r1 = straight.train_iteration(1)
    e1 = straight.evaluate(1)

    torch.manual_seed(7)
    first = family(data, lambda_ks=1.0, probes="resample", epochs=2)
    assert first.train_iteration(0)["train_loss"] == r0["train_loss"]
    first.evaluate(0)
    save_checkpoint_dir(tmp_path, first, 1)
    torch.manual_seed(999)  # a fresh process
    second = family(data, lambda_ks=1.0, probes="resample", epochs=2)
    load_checkpoint_dir(tmp_path, second)
    assert second.train_iteration(1)["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-6)
    e1b = second.evaluate(1)
    assert e1b == pytest.approx(e1, rel=1e-6)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_one_epoch_reports_every_metric(arch):
    data = random_bundle().split_validation(0.25)
    fam = family(data, arch=arch, lambda_ks=1.0, epochs=1)
    result = {**fam.train_iteration(0), **fam.evaluate(0)}
    assert set(result) == ALL_KEYS | VAL_KEYS | SAMPLE_KEYS
    assert all(math.isfinite(v) for v in result.values()), result
    assert 0 <= result["test_accuracy"] <= 1 and 0 <= result["test_activation_rate"] <= 1
    assert 0 <= result["test_active_units"] <= 4
    assert result["test_ks_eval"] <= result["test_ks_two_sided"]
    assert result["test_elbo"] == pytest.approx(-(result["test_recon_bce"] + result["test_kl"]), rel=1e-5)
    assert "train_time_s" not in result  # the loop reports train_seconds for every family
    assert fam.extra_results()["num_params"] > 0
    images = fam.media(0)
    assert set(images) == {"reconstructions", "prior_samples"}
    for img in images.values():
        assert img.ndim == 3 and img.shape[0] == 3 and 0 <= float(img.min()) and float(img.max()) <= 1


def test_baselines_report_ks_probe_too():
    fam = family(random_bundle(), lambda_ks=0.0, epochs=1)
    fam.train_iteration(0)
    result = fam.evaluate(0)
    assert math.isfinite(result["test_ks_probe"]) and result["test_ks_probe"] > 0


def test_training_on_a_learnable_task_lowers_the_loss():
    fam = family(stripes_bundle(), lambda_ks=1.0, lr=1e-2, hidden_dim=64, epochs=5, batch_size=32)
    before = fam.evaluate(0)
    losses = [fam.train_iteration(it)["train_loss"] for it in range(5)]
    after = fam.evaluate(4)
    # an untrained decoder outputs ~0.5 everywhere: 784 * log 2 = 543 nats per image
    assert losses[0] == pytest.approx(784 * math.log(2), rel=0.05)
    assert losses[-1] < 0.8 * losses[0], losses
    assert after["test_recon_bce"] < 0.8 * before["test_recon_bce"]
    assert after["test_elbo"] > before["test_elbo"]


def test_eval_every_repeats_the_last_metrics():
    fam = family(random_bundle(n_train=48, n_test=16), eval_every=2, epochs=3)
    fam.train_iteration(0)
    e0 = fam.evaluate(0)  # nothing computed yet: computes now
    assert set(e0) == EVAL_KEYS | SAMPLE_KEYS
    fam.train_iteration(1)
    e1 = fam.evaluate(1)  # due
    assert e1 != e0
    state = fam.state_dict()
    assert state["last_eval"] == e1
    fam.train_iteration(2)
    e2 = fam.evaluate(2)  # last iteration: always computed
    assert e2 != e1
    fam2 = family(random_bundle(n_train=48, n_test=16), eval_every=5, epochs=10)
    fam2.load_state_dict(state)
    fam2.train_iteration(2)
    assert fam2.evaluate(2) == e1  # not due: the stored last metrics


def test_perceptual_modes():
    data = random_bundle(n_train=32, n_test=8)
    frozen = family(data, perceptual="frozen", epochs=1)
    before = [p.clone() for p in frozen.model.perceptual.parameters()]
    enc_before = next(frozen.model.encoder.parameters()).clone()
    frozen.train_iteration(0)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.model.perceptual.parameters()))
    assert not torch.equal(enc_before, next(frozen.model.encoder.parameters()))

    trainable = family(data, perceptual="trainable", epochs=1)
    before = [p.clone() for p in trainable.model.perceptual.parameters()]
    trainable.train_iteration(0)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable.model.perceptual.parameters()))

    off = family(data, perceptual="off", epochs=1)
    assert off.model.perceptual is None
    assert off.extra_results()["num_params"] < trainable.extra_results()["num_params"]
    assert math.isfinite(off.train_iteration(0)["train_loss"])


def test_check_data_rejects_unusable_data():
    rng = np.random.default_rng(0)
    tabular = DataBundle("tab", rng.normal(size=(20, 5)).astype(np.float32), np.zeros(20, dtype=np.int64),
                         rng.normal(size=(5, 5)).astype(np.float32), np.zeros(5, dtype=np.int64), 2)
    with pytest.raises(ValueError, match="needs image data"):
        VAEFamily.check_data(tabular, VAEFamily.Config())
    unlabelled = random_bundle(n_train=8, n_test=4)
    unlabelled.y_train[:] = -1
    with pytest.raises(ValueError, match="class labels"):
        VAEFamily.check_data(unlabelled, VAEFamily.Config())
    scaled = random_bundle(n_train=8, n_test=4)
    scaled.x_train = scaled.x_train.astype(np.float32)  # 0..255 floats, not [0, 1]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VAEFamily.check_data(scaled, VAEFamily.Config())
