"""The ANN course's MNIST CNNs in ``cnn_classifier``: Keras' "simple MNIST convnet" (34,826
parameters), per-block kernels and filters, valid padding, floor pooling, activations; the
journal's defaults untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from datafiles import balanced_labels, blob_images
from sweeplab.datasets.base import DataBundle
from sweeplab.families.cnn_classifier import CNNClassifier, CNNClassifierConfig
from sweeplab.models.cnn import ConvNet, keras_mnist_convnet, num_params, plan_pools

KERAS = {"n_blocks": 2, "block_filters": "32,64", "kernel_size": 3, "padding": "valid", "pool_rounding": "floor",
         "norm": "none", "head_dropout": 0.5}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def mnist_like(n_train: int = 300, n_test: int = 100, size: int = 28) -> DataBundle:
    rng = np.random.default_rng(0)
    y_tr, y_te = balanced_labels(n_train, 10, rng), balanced_labels(n_test, 10, rng)
    x_tr, x_te = blob_images(y_tr, 10, size, size, rng)[:, None], blob_images(y_te, 10, size, size, rng)[:, None]
    return DataBundle("blobs", x_tr, y_tr, x_te, y_te, num_classes=10)


def test_keras_simple_mnist_convnet_has_34826_parameters_layer_by_layer():
    m = keras_mnist_convnet()
    conv1, conv2, dense = m.features[0][0], m.features[1][0], m.head[-1]
    assert [num_params(layer) for layer in (conv1, conv2, dense)] == [320, 18_496, 16_010]  # Keras' summary
    assert num_params(m) == 34_826
    x = torch.zeros(2, 1, 28, 28)
    shapes = []
    for block in m.features:
        x = block[0](x)
        shapes.append(tuple(x.shape[1:]))
        for layer in list(block)[1:]:  # identity norm, ReLU, pooling
            x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(32, 26, 26), (32, 13, 13), (64, 11, 11), (64, 5, 5)]  # floor pooling, as Keras
    assert m.feature_shape == (64, 5, 5) and isinstance(m.head[1], nn.Dropout) and m.head[1].p == 0.5


def test_the_family_builds_the_keras_convnet_from_a_job_config_and_learns():
    data = mnist_like()
    fam = CNNClassifier(CNNClassifierConfig(**KERAS, epochs=3, batch_size=32, lr=2e-3), data, torch.device("cpu"))
    assert fam.extra_results()["num_params"] == 34_826
    results = [{**fam.train_iteration(i), **fam.evaluate(i)} for i in range(3)]
    assert results[-1]["test_accuracy"] > 0.9


def test_course_baseline_per_block_kernels_and_filters():
    # 4 layers, channels 1 -> 16 -> 32 -> 32 -> 32, kernels "from 3 to 2 at the end", same padding
    m = ConvNet((1, 28, 28), 10, n_blocks=4, block_filters=[16, 32, 32, 32], kernel_sizes=[3, 3, 3, 2],
                norm="none", activation="leaky_relu")
    convs = [b[0] for b in m.features]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3), (3, 3), (2, 2)]
    assert m.block_channels == [16, 32, 32, 32] and m.feature_shape == (32, 4, 4)
    assert all(isinstance(b[2], nn.LeakyReLU) for b in m.features)
    expected = (9 * 16 + 16) + (9 * 16 * 32 + 32) + (9 * 32 * 32 + 32) + (4 * 32 * 32 + 32) + (32 * 16 * 10 + 10)
    assert num_params(m) == expected
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_config_parses_lists_and_refuses_mismatches_by_name():
    cfg = CNNClassifierConfig(n_blocks=4, kernel_sizes="3,3,3,2", block_filters=[16, 32, 32, 32], activation="tanh")
    assert cfg.kernel_sizes == [3, 3, 3, 2]
    with pytest.raises(ValidationError, match="kernel_sizes"):
        CNNClassifierConfig(n_blocks=3, kernel_sizes="3,3,3,2")
    with pytest.raises(ValidationError, match="comma-separated"):
        CNNClassifierConfig(n_blocks=2, block_filters="32;64")
    with pytest.raises(ValidationError, match="activation"):
        CNNClassifierConfig(activation="swish")


def test_valid_padding_drops_poolings_that_no_longer_fit():
    assert plan_pools(8, 8, [3, 3], padding="valid", pool_ceil=False) == ([0], [(3, 3), (1, 1)])
    assert plan_pools(8, 8, [5, 3], padding="valid") == ([], [(4, 4), (2, 2)])  # 8-4=4 would pool to 2 < 3
    assert plan_pools(28, 28, [3, 3, 3, 3]) == ([0, 1, 2], [(14, 14), (7, 7), (4, 4), (4, 4)])  # the default
    with pytest.raises(ValueError, match="below 1x1"):
        plan_pools(8, 8, [5, 5], padding="valid")


def test_defaults_are_the_journals_net():
    cfg = CNNClassifierConfig()
    assert (cfg.activation, cfg.padding, cfg.pool_rounding, cfg.head_dropout) == ("relu", "same", "ceil", 0.0)
    data = mnist_like(n_train=20, n_test=10)
    torch.manual_seed(0)
    built = CNNClassifier(cfg, data, torch.device("cpu")).model
    torch.manual_seed(0)
    plain = ConvNet((1, 28, 28), 10)
    assert [type(m) for m in built.modules()] == [type(m) for m in plain.modules()]
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), plain.state_dict().values()))
