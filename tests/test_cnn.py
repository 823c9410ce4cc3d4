"""The CNN image classifier: model shapes and layout, accuracy, and the ``cnn_classifier`` family
(optimizers, learning, exact resume, the plateau schedule never looking at the test loss)."""
from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from sweeplab.datasets.base import DataBundle
from sweeplab.metrics.classification import accuracy, correct_count
from sweeplab.models.cnn import (NORMS, ConvNet, InstanceNorm, group_count, max_pools,
                                 num_params, pool_positions)
from sweeplab.families.cnn_classifier import (CNNClassifier, CNNClassifierConfig, channel_stats,
                                              random_flip_crop)
from sweeplab.kit.checkpoint import load_checkpoint_dir, save_checkpoint_dir
from sweeplab.kit.family import get_family
from sweeplab.kit.optim import DEFAULT_LR

INPUTS = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}
#: poolings each input size allows (never below 3x3): 8->4 | 28->14->7->4 | 32->16->8->4
POOLS_ALLOWED = {"digits": 1, "mnist": 3, "cifar": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def blob_bundle(n_train: int = 384, n_test: int = 192, n_val: int = 0, size: int = 16,
                channels: int = 1, seed: int = 0) -> DataBundle:
    """Four classes: a bright Gaussian blob in quadrant k (jittered) on a noisy background,
    as ``uint8 [N, C, size, size]`` images."""
    rng = np.random.default_rng(seed)
    q = size / 4
    centers = np.array([(q, q), (q, 3 * q), (3 * q, q), (3 * q, 3 * q)])
    yy, xx = np.mgrid[:size, :size]

    def make(n: int):
        y = rng.integers(0, 4, n)
        c = centers[y] + rng.normal(0, size / 16, (n, 2))
        d2 = (yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2
        img = 180 * np.exp(-d2 / (2 * (size / 10) ** 2)) + rng.uniform(0, 60, (n, size, size))
        x = np.repeat(img[:, None], channels, axis=1).clip(0, 255).astype(np.uint8)
        return x, y.astype(np.int64)

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    x_va, y_va = make(n_val) if n_val else (None, None)
    return DataBundle(name="blobs", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                      x_val=x_va, y_val=y_va, num_classes=4)


def make_family(data: DataBundle, **cfg) -> CNNClassifier:
    base = {"n_blocks": 2, "filters": 8, "batch_size": 32, "epochs": 3}
    return CNNClassifier(CNNClassifierConfig(**{**base, **cfg}), data, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_shapes_for_every_norm_and_depth(kind):
    shape = INPUTS[kind]
    x = torch.rand(2, *shape)
    for n_blocks in range(1, 9):
        n_pools = min(n_blocks, POOLS_ALLOWED[kind])
        side = shape[1]
        for _ in range(n_pools):
            side = math.ceil(side / 2)
        for norm in NORMS:
            model = ConvNet(shape, 7, n_blocks=n_blocks, filters=4, norm=norm, dropout=0.1)
            model.train()
            feats = model.features(x)
            assert feats.shape == (2, 4, side, side) == (2, *model.feature_shape)
            assert side >= 3 or side == shape[1]
            assert model(x).shape == (2, 7)
            model.eval()
            with torch.no_grad():
                assert model(x).shape == (2, 7)
            assert len(model.pool_after) == n_pools


def test_pooling_placement_and_limits():
    assert [max_pools(s, s) for s in (2, 3, 5, 6, 8, 28, 32, 64)] == [0, 0, 1, 1, 1, 3, 3, 4]
    assert pool_positions(6, 3, "early") == [0, 1, 2]
    assert pool_positions(6, 3, "even") == [1, 3, 5]
    assert pool_positions(4, 3, "even") == [1, 2, 3]
    assert pool_positions(8, 1, "even") == [7]
    assert pool_positions(2, 2, "even") == [0, 1]
    with pytest.raises(ValueError):
        pool_positions(2, 3)
    with pytest.raises(ValueError):
        pool_positions(4, 2, "middle")
    m = ConvNet((1, 28, 28), 10, n_blocks=6, pooling="even")
    pooled = [i for i, b in enumerate(m.features) if isinstance(b[-1], nn.MaxPool2d)]
    assert pooled == m.pool_after == [1, 3, 5]


def test_block_layout_conv_norm_relu_dropout2d_pool():
    expected_norm = {"batch": nn.BatchNorm2d, "layer": nn.GroupNorm, "group": nn.GroupNorm,
                     "instance": InstanceNorm, "none": nn.Identity}
    for norm, cls in expected_norm.items():
        model = ConvNet((1, 28, 28), 10, n_blocks=4, filters=16, norm=norm, dropout=0.25)
        for i, block in enumerate(model.features):
            kinds = [type(m) for m in block]
            tail = [nn.MaxPool2d] if i in model.pool_after else []
            assert kinds == [nn.Conv2d, cls, nn.ReLU, nn.Dropout2d] + tail, (norm, i, kinds)
            assert block[3].p == 0.25
            assert (block[0].bias is not None) == (norm == "none")
        n = model.features[0][1]
        if norm == "layer":
            assert n.num_groups == 1
        if norm == "group":
            assert n.num_groups == group_count(16) == 4
        if norm == "instance":
            assert n.affine and n.num_groups == 16
    no_drop = ConvNet((1, 28, 28), 10, n_blocks=2, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout2d) for m in no_drop.modules())


def test_instance_norm_equals_torch_instance_norm2d():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 6, 7, 4, generator=g) * 3 + 1
    ours, ref = InstanceNorm(6), nn.InstanceNorm2d(6, affine=True)
    with torch.no_grad():
        ours.weight.copy_(torch.rand(6, generator=g) + 0.5)
        ours.bias.copy_(torch.randn(6, generator=g))
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    for mode in (True, False):
        ours.train(mode)
        ref.train(mode)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
        w = torch.randn(ya.shape, generator=g)
        (ya * w).sum().backward()
        (yb * w).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)


def test_group_count():
    assert [group_count(c) for c in (1, 7, 8, 16, 24, 32, 64, 256, 30)] == [1, 1, 2, 4, 6, 8, 16, 32, 6]


def expected_params(shape, n_blocks, filters, k, norm, pools, num_classes=10):
    """Parameter count written out by hand: convs (+bias without norm, +2C affine with norm)
    and a linear head on the flattened final map."""
    c, side, _ = shape
    total, in_ch = 0, c
    for _ in range(n_blocks):
        total += k * k * in_ch * filters + (filters if norm == "none" else 2 * filters)
        in_ch = filters
    for _ in range(pools):
        side = math.ceil(side / 2)
    return total + filters * side * side * num_classes + num_classes


@pytest.mark.parametrize("norm", ["none", "batch", "instance"])
def test_param_counts_follow_filters(norm):
    counts = []
    for filters in (8, 16, 32):
        m = ConvNet((1, 28, 28), 10, n_blocks=4, filters=filters, kernel_size=3, norm=norm)
        assert num_params(m) == expected_params((1, 28, 28), 4, filters, 3, norm, 3)
        counts.append(num_params(m))
    assert counts[0] < counts[1] < counts[2]
    m5 = ConvNet((3, 32, 32), 10, n_blocks=2, filters=16, kernel_size=5, norm=norm)
    assert num_params(m5) == expected_params((3, 32, 32), 2, 16, 5, norm, 2)
    m5.features[0][0].weight.requires_grad_(False)
    assert num_params(m5, trainable_only=True) == num_params(m5) - 5 * 5 * 3 * 16


def test_channel_growth_and_hidden_head():
    m = ConvNet((1, 28, 28), 10, n_blocks=5, filters=8, channel_growth=2.0)
    assert m.block_channels == [8, 16, 32, 64, 64]
    assert m.feature_shape == (64, 4, 4)
    h = ConvNet((1, 28, 28), 10, n_blocks=3, filters=8, head_hidden=32, norm="none")
    assert num_params(h) == expected_params((1, 28, 28), 3, 8, 3, "none", 3, num_classes=32) + 32 * 10 + 10
    with pytest.raises(ValueError):
        ConvNet((1, 28, 28), 10, norm="weight")
    with pytest.raises(ValueError):
        ConvNet((1, 28, 28), 10, n_blocks=0)


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
def test_accuracy_matches_sklearn():
    from sklearn.metrics import accuracy_score

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(257, 5, generator=g)
    y = torch.randint(0, 5, (257,), generator=g)
    ref = accuracy_score(y.numpy(), logits.argmax(1).numpy())
    assert accuracy(logits, y) == pytest.approx(ref)
    assert accuracy(logits.argmax(1), y) == pytest.approx(ref)
    assert correct_count(logits, y) == round(ref * 257)
    assert accuracy(torch.eye(3), torch.arange(3)) == 1.0
    with pytest.raises(ValueError):
        accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError):
        accuracy(logits, y[:-1])


# ------------------------------------------------------------------------------------------------
# family
# ------------------------------------------------------------------------------------------------
def test_registered_and_config_validation():
    assert get_family("cnn_classifier") is CNNClassifier
    with pytest.raises(ValueError):
        CNNClassifierConfig(filterz=3)
    with pytest.raises(ValueError):
        CNNClassifierConfig(optimizer="sgd", nesterov=True, momentum=0.0)
    with pytest.raises(ValueError):
        CNNClassifierConfig(norm="weight")
    assert CNNClassifierConfig(optimizer="adadelta").effective_lr == 1.0
    assert CNNClassifierConfig(optimizer="adamw").effective_weight_decay == 0.01
    assert CNNClassifierConfig(optimizer="adam", lr=0.02).effective_lr == 0.02


def test_check_data_rejects_tabular_and_unlabelled():
    good = blob_bundle(n_train=8, n_test=8)
    tab = DataBundle(name="tab", x_train=np.zeros((8, 3), np.float32), y_train=np.zeros(8, np.int64),
                     x_test=np.zeros((4, 3), np.float32), y_test=np.zeros(4, np.int64), num_classes=2)
    with pytest.raises(ValueError, match="images"):
        CNNClassifier.check_data(tab, CNNClassifierConfig())
    unl = DataBundle(name="unl", x_train=good.x_train, y_train=-np.ones(8, np.int64),
                     x_test=good.x_test, y_test=good.y_test, num_classes=4)
    with pytest.raises(ValueError, match="labels"):
        make_family(unl)


def test_channel_stats_match_numpy():
    x = np.random.default_rng(1).integers(0, 256, (50, 3, 5, 6)).astype(np.uint8)
    mean, std = channel_stats(x, chunk=7)
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean.numpy(), ref.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), ref.std(axis=(0, 2, 3)), rtol=1e-4)


def test_random_flip_crop_is_a_flip_and_shift_of_each_image():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 2, 6, 7, generator=g)
    flipped = random_flip_crop(x, 0, torch.Generator().manual_seed(0))
    is_flip = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(64)]
    is_same = [torch.equal(flipped[i], x[i]) for i in range(64)]
    assert all(a or b for a, b in zip(is_flip, is_same))
    assert 10 < sum(is_flip) < 54
    p = 2
    out = random_flip_crop(x, p, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    offsets = set()
    for i in range(64):
        found = None
        for img in (x[i], x[i].flip(-1)):
            xp = torch.nn.functional.pad(img, (p, p, p, p))
            for oy in range(2 * p + 1):
                for ox in range(2 * p + 1):
                    if torch.equal(xp[:, oy:oy + 6, ox:ox + 7], out[i]):
                        found = (oy, ox)
        assert found is not None, i
        offsets.add(found)
    assert len(offsets) > 5  # offsets vary across the batch


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "adadelta", "rmsprop"])
def test_each_optimizer_builds_and_steps(name):
    data = blob_bundle(n_train=64, n_test=32, size=8)
    fam = make_family(data, optimizer=name, epochs=1, nesterov=(name == "sgd"))
    expected = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                "adadelta": torch.optim.Adadelta, "rmsprop": torch.optim.RMSprop}[name]
    assert type(fam.optimizer) is expected
    before = [p.detach().clone() for p in fam.model.parameters()]
    res = fam.train_iteration(0)
    assert res["current_lr"] == DEFAULT_LR[name]
    assert math.isfinite(res["train_loss"]) and 0 <= res["train_accuracy"] <= 1
    assert all(not torch.equal(a, b) for a, b in zip(before, fam.model.parameters()))
    if name == "sgd":
        assert fam.optimizer.param_groups[0]["nesterov"] and fam.optimizer.param_groups[0]["momentum"] == 0.9


def test_learns_blobs_well_above_chance_and_reports_its_metrics():
    data = blob_bundle(n_val=96)
    fam = make_family(data, lr=3e-3, norm="batch", dropout=0.1)
    reported = set(fam.extra_results())
    for it in range(fam.num_iterations):
        res = {**fam.train_iteration(it), **fam.evaluate(it)}
        reported |= set(res)
    assert reported == {m.name for m in CNNClassifier.metrics}
    assert res["test_accuracy"] > 0.8 and res["val_accuracy"] > 0.8  # chance is 0.25
    assert 0 <= res["test_loss"] < math.log(4)
    assert fam.extra_results()["num_params"] == num_params(fam.model)
    # evaluate_split agrees with an independent computation in eval mode
    fam.model.eval()
    with torch.no_grad():
        x = (torch.from_numpy(data.x_test).float() / 255 - fam.mean) / fam.std
        logits = fam.model(x)
    loss, acc = fam.evaluate_split("test")
    assert acc == pytest.approx(accuracy(logits, torch.from_numpy(data.y_test)))
    assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, torch.from_numpy(data.y_test))), rel=1e-5)


def test_learns_sklearn_digits_8x8():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    x = np.rint(raw.images * 255 / 16).astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, raw.target.astype(np.int64), test_size=0.25,
                                              random_state=0, stratify=raw.target)
    data = DataBundle(name="digits", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=10)
    fam = make_family(data, n_blocks=3, filters=16, lr=3e-3, epochs=3)
    without_val = set()
    for it in range(3):
        res = {**fam.train_iteration(it), **fam.evaluate(it)}
        without_val |= set(res)
    assert "val_loss" not in without_val and "val_accuracy" not in without_val
    assert res["test_accuracy"] > 0.85  # chance is 0.1


def test_resume_from_checkpoint_gives_identical_next_epoch(tmp_path):
    data = blob_bundle(n_train=256, n_test=64, n_val=64)
    cfg = dict(dropout=0.2, augment="flip_crop", lr_schedule="plateau", label_smoothing=0.1,
               optimizer="sgd", lr=0.05, seed=5, norm="batch")
    torch.manual_seed(0)
    a = make_family(data, **cfg)
    a.train_iteration(0)
    a.evaluate(0)
    save_checkpoint_dir(tmp_path, a, 1)
    next_a = {**a.train_iteration(1), **a.evaluate(1)}

    torch.manual_seed(123)  # a different global RNG state: the checkpoint must restore it
    b = make_family(data, **{**cfg, "seed": 6})  # a different init and generator, overwritten
    assert load_checkpoint_dir(tmp_path, b) == (1, 0.0)
    next_b = {**b.train_iteration(1), **b.evaluate(1)}
    assert next_a == next_b
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(pa, pb)
    assert a.scheduler.state_dict() == b.scheduler.state_dict()

    torch.manual_seed(123)
    c = make_family(data, **{**cfg, "seed": 6})  # control: without the checkpoint it differs
    c.train_iteration(0)
    c.evaluate(0)
    assert {**c.train_iteration(1), **c.evaluate(1)} != next_a


@pytest.mark.parametrize("with_val", [True, False])
def test_plateau_steps_on_val_or_train_loss_never_test(with_val):
    data = blob_bundle(n_train=128, n_test=64, n_val=64 if with_val else 0, size=8)
    fam = make_family(data, lr_schedule="plateau", plateau_patience=0, plateau_factor=0.5,
                      lr=0.05, epochs=4)
    seen, lrs = [], []
    with mock.patch.object(fam.scheduler, "step", wraps=fam.scheduler.step) as spy:
        for it in range(4):
            res = {**fam.train_iteration(it), **fam.evaluate(it)}
            fam.evaluate(it)  # a second evaluation in the same iteration must not step again
            seen.append(res)
            lrs.append(res["current_lr"])
    monitored = [r["val_loss" if with_val else "train_loss"] for r in seen]
    assert [c.args[0] for c in spy.call_args_list] == monitored
    assert all(c.args[0] != r["test_loss"] for c, r in zip(spy.call_args_list, seen))
    # the reported lr follows a ReduceLROnPlateau replayed on the monitored losses
    replay = torch.optim.lr_scheduler.ReduceLROnPlateau(
        torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05), factor=0.5, patience=0)
    expected = []
    for loss in monitored:
        expected.append(replay.optimizer.param_groups[0]["lr"])
        replay.step(loss)
    assert lrs == expected


def test_channels_last_default_follows_the_norm():
    data = blob_bundle(n_train=16, n_test=8, size=8)
    for norm, expect in (("batch", True), ("none", True), ("group", True), ("instance", False)):
        fam = make_family(data, norm=norm, epochs=1)
        w = fam.model.features[1][0].weight  # [8, 8, 3, 3]: the two layouts differ
        assert fam.config.use_channels_last is expect
        assert w.is_contiguous(memory_format=torch.channels_last) is expect
    assert make_family(data, norm="instance", channels_last=True).config.use_channels_last
