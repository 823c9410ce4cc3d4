"""The ``gan`` family, its models and losses, and the reference classifier that scores its samples:
losses against their closed forms, both backbones' shapes, the discriminator/generator step
ratio, and one sweep whose trials all reuse one reference classifier trained once."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sweeplab.datasets.base import load_dataset
from sweeplab.kit.loop import build_family
from sweeplab.models.gan import build_gan, discriminator_loss, generator_loss

CPU = torch.device("cpu")


def test_losses_match_their_closed_forms():
    zero = torch.zeros(6)
    assert float(discriminator_loss(zero, zero)) == pytest.approx(math.log(2))   # undecided D
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = torch.sigmoid
    expected_d = 0.5 * (-torch.log(sig(real)).mean() - torch.log(1 - sig(fake)).mean())
    assert float(discriminator_loss(real, fake)) == pytest.approx(float(expected_d), rel=1e-5)
    # non-saturating: -log D(G(z)), not log(1 - D(G(z)))
    assert float(generator_loss(fake)) == pytest.approx(float(-torch.log(sig(fake)).mean()), rel=1e-5)


@pytest.mark.parametrize("backbone", ["mlp", "dcgan"])
def test_backbones_map_codes_to_images_and_images_to_logits(backbone):
    torch.manual_seed(0)
    G, D = build_gan(backbone, (1, 28, 28), 20)
    x = G(torch.randn(5, 20))
    assert x.shape == (5, 1, 28, 28) and x.min() > -1 and x.max() < 1
    assert D(x).shape == (5,)


def test_dcgan_refuses_sides_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        build_gan("dcgan", (1, 30, 30), 8)


def digits():
    return load_dataset("digits")


def test_d_steps_sets_the_generator_step_ratio_and_the_grid_is_fixed(tmp_path):
    data = digits()
    fam = build_family("gan", {"threads": 1, "batch_size": 100, "d_steps": 3, "latent_dim": 4, "epochs": 1,
                               "n_samples": 200, "reference_dir": str(tmp_path)}, data, device=CPU)
    out = fam.train_iteration(0)
    n_d = math.ceil(len(data.x_train) / 100)                  # 15 batches, none shorter than 2
    steps = lambda opt: int(next(iter(opt.state.values()))["step"])  # noqa: E731
    assert steps(fam.opt_d) == n_d and steps(fam.opt_g) == n_d // 3
    assert 0 < out["train_d_fake"] < out["train_d_real"] < 1
    grid_a, grid_b = fam.media(0)["fixed_noise_samples"], fam.media(0)["fixed_noise_samples"]
    assert grid_a.shape[0] == 3 and torch.equal(grid_a, grid_b)
    scores = fam.evaluate(0)
    assert set(scores) == {"class_coverage", "class_kl", "fd_classifier"}
    assert fam.extra_results()["class_coverage_ceiling"] == 10


def test_reference_classifier_scores_real_and_one_digit_samples(tmp_path):
    from sweeplab.metrics.reference_classifier import dataset_fingerprint, reference_classifier

    data = digits()
    state_before = torch.get_rng_state()
    ref = reference_classifier(data, tmp_path)
    assert torch.equal(torch.get_rng_state(), state_before), "training it must not move the caller's RNG"
    assert ref.test_accuracy > 0.9
    ceil = ref.ceilings(len(data.x_test))
    assert ceil["class_coverage"] == 10 and ceil["class_kl"] < 0.02
    real = ref.score(data.x_train[:len(data.x_test)])          # other real images: near the ceiling
    assert real["class_coverage"] == 10 and real["fd_classifier"] < 3 * ceil["fd_classifier"] + 1
    one = np.repeat(data.x_test[:1], 300, axis=0)              # a generator that emits one digit
    scored = ref.score(one)
    assert scored["class_coverage"] == 1
    assert scored["class_kl"] == pytest.approx(-math.log(ref.prior[int(ref.embed(one[:1])[0][0])]), abs=0.01)
    assert scored["fd_classifier"] > 10 * real["fd_classifier"]
    assert dataset_fingerprint(data) != dataset_fingerprint(data.subset(0.5, 1.0))


def test_the_reference_classifier_is_trained_once_per_sweep(ray_session, storage, tmp_path):
    from sweeplab import load_sweep
    from sweeplab.runner import run_sweep
    from sweeplab.spec import validate_spec

    cache = tmp_path / "reference"
    spec = validate_spec({
        "name": "gan_once", "trainable": "gan", "data": {"name": "digits"},
        "train": {"epochs": 1, "batch_size": 256, "latent_dim": 4, "n_samples": 300, "threads": 1,
                  "reference_dir": str(cache)},
        "search": {"sampler": "grid", "max_concurrent": 2,
                   "variants": [{"name": "mlp", "backbone": "mlp"}, {"name": "dcgan", "backbone": "dcgan"}]},
        "metric": "fd_classifier", "scheduler": {"type": "none"}, "repeats": 2,
    })
    path, _ = run_sweep(spec, storage_path=str(storage), verbose=0)
    df = load_sweep(path).dataframe()
    assert len(df) == 4 and set(df["status"]) == {"completed"}
    entries = list(Path(cache).glob("digits-*.pt"))
    history = [json.loads(line) for line in entries[0].with_suffix(".history").read_text().splitlines()]
    assert len(entries) == 1 and len(history) == 1, history      # trained once, by one trial
    assert df["reference_accuracy"].nunique() == 1 and df["fd_classifier_ceiling"].nunique() == 1
    assert df["reference_accuracy"].iloc[0] == pytest.approx(history[0]["test_accuracy"])
