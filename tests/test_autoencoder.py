"""The ``autoencoder`` and ``stacked_autoencoder`` families on scikit-learn's 8x8 digits: one
reconstruction error defined once (checked against scikit-learn's mean_squared_error) and
reported alike on every split; greedy pretraining, the frozen-encoder classifier and fine-tuning
end to end, each phase training only its own parameters; the pretrain: false ablation; resuming
inside a phase."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_squared_error
from torch import nn

from sweeplab.datasets.base import load_dataset
from sweeplab.kit.loop import build_family

#: the tests run on the CPU whatever the machine has (build_family defaults to CUDA where there is one)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").split_validation(0.2, seed=0)


def test_default_autoencoder_is_the_specs_one_layer_model(digits):
    fam = build_family("autoencoder", {"encoding_dim": 16}, digits, device=CPU)
    layers = [*fam.model.encoder, *fam.model.decoder]
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.Sigmoid]
    assert (layers[0].in_features, layers[0].out_features, layers[2].out_features) == (64, 16, 64)
    deep = build_family("autoencoder", {"encoding_dim": 8, "hidden_dims": [32], "activation": "tanh"}, digits,
                        device=CPU)
    assert [m.out_features for m in deep.model.modules() if isinstance(m, nn.Linear)] == [32, 8, 32, 64]
    assert isinstance(deep.model.encoder[1], nn.Tanh) and isinstance(deep.model.decoder[-1], nn.Sigmoid)


def test_one_reconstruction_error_on_every_split_and_training_lowers_it(digits):
    cfg = {"encoding_dim": 16, "epochs": 6, "batch_size": 32, "seed": 1}
    fam = build_family("autoencoder", cfg, digits, device=CPU)
    first = {**fam.train_iteration(0), **fam.evaluate(0)}
    for it in range(1, 6):
        last = {**fam.train_iteration(it), **fam.evaluate(it)}
    for split, x in (("train", digits.x_train), ("val", digits.x_val), ("test", digits.x_test)):
        flat = x.reshape(len(x), -1) / 255.0
        with torch.no_grad():
            recon = fam.model(torch.as_tensor(flat, dtype=torch.float32)).numpy()
        assert last[f"{split}_recon_mse"] == pytest.approx(mean_squared_error(flat, recon), rel=1e-5)
        assert last[f"{split}_recon_mse"] < 0.6 * first[f"{split}_recon_mse"]
    assert last["train_loss"] < first["train_loss"] and last["current_lr"] == 1e-3
    assert fam.extra_results()["num_params"] == 64 * 16 + 16 + 16 * 64 + 64


def run_all(fam) -> list[dict]:
    return [{**fam.train_iteration(i), **fam.evaluate(i)} for i in range(fam.num_iterations)]


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def unchanged(before: list[torch.Tensor], module: nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_stacked_pretraining_then_frozen_classifier_then_finetuning(digits):
    cfg = {"hidden_dims": [48, 24], "pretrain_epochs": 3, "classifier_epochs": 2, "finetune_epochs": 4,
           "batch_size": 32, "seed": 2, "lr": 0.01}  # 36 steps an epoch: Adam's 1e-3 barely moves the head
    fam = build_family("stacked_autoencoder", cfg, digits, device=CPU)
    assert fam.num_iterations == fam.num_iterations_of(fam.config) == 2 * 3 + 2 + 4
    m = fam.model
    results, frozen = [], {}
    for i in range(fam.num_iterations):
        phase, layer = fam.plan[i]
        if (phase, layer) == ("pretrain", 1):
            frozen["enc0"] = params(m.encoders[0])
        if phase == "classifier":
            frozen.setdefault("encoder", params(m.encoders))
        if phase == "finetune":
            frozen.setdefault("decoders", params(m.decoders))
        results.append({**fam.train_iteration(i), **fam.evaluate(i)})
        if (phase, layer) == ("pretrain", 1):
            assert unchanged(frozen["enc0"], m.encoders[0]), "pretraining layer 1 must not move layer 0"
    assert unchanged(frozen["decoders"], m.decoders) and not unchanged(frozen["encoder"], m.encoders)
    assert [r["phase"] for r in results] == [0] * 6 + [1] * 2 + [2] * 4
    assert all(math.isnan(r["test_accuracy"]) and math.isnan(r["val_accuracy_pre_finetune"]) for r in results[:6])
    assert results[2]["train_loss"] < results[0]["train_loss"]  # layer 0's reconstruction improves
    pre = results[7]["test_accuracy"]
    assert all(r["test_accuracy_pre_finetune"] == pre for r in results[7:]) and pre > 0.5
    assert results[-1]["test_accuracy"] > 0.9 and results[-1]["test_accuracy"] >= pre
    assert results[-1]["test_loss"] < results[7]["test_loss"]
    assert fam.extra_results()["num_params"] == 64 * 48 + 48 + 48 * 24 + 24 + 24 * 10 + 10


def test_classifier_phase_trains_only_the_softmax_layer(digits):
    fam = build_family("stacked_autoencoder", {"hidden_dims": [16], "pretrain_epochs": 1, "classifier_epochs": 1,
                                               "finetune_epochs": 0}, digits, device=CPU)
    fam.train_iteration(0)
    encoder = params(fam.model.encoders)
    head = params(fam.model.head)
    fam.train_iteration(1)
    assert unchanged(encoder, fam.model.encoders) and not unchanged(head, fam.model.head)


def test_the_ablation_skips_pretraining(digits):
    fam = build_family("stacked_autoencoder", {"hidden_dims": [32], "pretrain": False, "classifier_epochs": 2,
                                               "finetune_epochs": 2, "seed": 3}, digits, device=CPU)
    results = run_all(fam)
    assert [r["phase"] for r in results] == [1, 1, 2, 2] and not any(math.isnan(r["test_accuracy"]) for r in results)
    assert results[-1]["test_accuracy_pre_finetune"] == results[1]["test_accuracy"]


def test_resuming_inside_the_finetuning_phase_repeats_it_exactly(digits):
    cfg = {"hidden_dims": [16], "pretrain_epochs": 1, "classifier_epochs": 1, "finetune_epochs": 3, "seed": 4}
    whole = build_family("stacked_autoencoder", cfg, digits, device=CPU)
    for i in range(3):
        whole.train_iteration(i), whole.evaluate(i)
    state, gen = copy.deepcopy(whole.state_dict()), whole.generator.get_state()
    expected = {**whole.train_iteration(3), **whole.evaluate(3)}
    resumed = build_family("stacked_autoencoder", cfg, digits, device=CPU)
    resumed.load_state_dict(state)
    resumed.generator.set_state(gen)
    assert {**resumed.train_iteration(3), **resumed.evaluate(3)} == expected
    assert resumed.optimizer.state_dict()["state"][0]["step"] == whole.optimizer.state_dict()["state"][0]["step"]


def test_bad_configs_and_data_are_refused():
    from sweeplab.datasets.base import DataBundle
    from sweeplab.families.autoencoder import AutoencoderFamily
    from sweeplab.families.stacked_autoencoder import StackedAutoencoderFamily

    with pytest.raises(ValueError, match="activation"):
        AutoencoderFamily.Config(activation="swish")
    with pytest.raises(ValueError, match="hidden_dims"):
        StackedAutoencoderFamily.Config(hidden_dims=[])
    wide = np.full((4, 3), 2.0, np.float32)
    bundle = DataBundle("wide", wide, None, wide, None, task="unlabelled")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        AutoencoderFamily.check_data(bundle, AutoencoderFamily.Config())
