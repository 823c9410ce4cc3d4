"""``vit``: the Vision Transformer's shapes and parameter count against its definition, the patch
embedding as a linear map of flattened patches, configuration errors, and learning on tiny images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from datafiles import balanced_labels, blob_images
from sweeplab.datasets.base import DataBundle
from sweeplab.families.vit import ViTClassifier, ViTConfig
from sweeplab.models.cnn import num_params
from sweeplab.models.vit import ViT

#: the report's seven (dim, depth, heads, mlp_dim) configurations
REPORT_CONFIGS = [(64, 6, 8, 128), (128, 6, 8, 256), (32, 6, 8, 64), (64, 8, 16, 128), (64, 3, 4, 128),
                  (128, 8, 8, 256), (128, 8, 16, 256)]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def expected_params(c, hw, p, dim, depth, mlp, classes):
    n = (hw // p) ** 2
    embed = c * p * p * dim + dim + dim + (n + 1) * dim  # patch conv, class token, positions
    layer = (3 * dim * dim + 3 * dim) + (dim * dim + dim) + 2 * 2 * dim + (dim * mlp + mlp) + (mlp * dim + dim)
    return embed + depth * layer + 2 * dim + dim * classes + classes


@pytest.mark.parametrize("dim, depth, heads, mlp", REPORT_CONFIGS)
def test_the_reports_configurations_build_with_the_expected_sizes(dim, depth, heads, mlp):
    m = ViT((1, 28, 28), 10, patch_size=7, dim=dim, depth=depth, heads=heads, mlp_dim=mlp)
    assert m.num_patches == 16
    assert num_params(m) == expected_params(1, 28, 7, dim, depth, mlp, 10)
    assert m.encoder.layers[0].self_attn.head_dim == dim // heads
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_patch_embedding_is_a_linear_map_of_flattened_patches():
    m = ViT((1, 28, 28), 10, patch_size=7, dim=16, depth=1, heads=2, mlp_dim=8)
    x = torch.randn(3, 1, 28, 28)
    patches = x.unfold(2, 7, 7).unfold(3, 7, 7).reshape(3, 16, 49)  # row-major over the 4x4 grid
    linear = patches @ m.embed.weight.reshape(16, 49).T + m.embed.bias
    assert torch.allclose(m.embed(x).flatten(2).transpose(1, 2), linear, atol=1e-5)


def test_configuration_errors_name_the_fix():
    with pytest.raises(ValidationError, match="multiple of heads"):
        ViTConfig(dim=30, heads=8)
    with pytest.raises(ValueError, match="must divide"):
        ViT((1, 28, 28), 10, patch_size=5)
    data = tiny_images(size=12)
    with pytest.raises(ValueError, match="vit: patch_size 5"):
        ViTClassifier.check_data(data, ViTConfig(patch_size=5))
    assert (ViTConfig().lr, ViTConfig().batch_size, ViTConfig().epochs) == (3e-3, 100, 20)


def tiny_images(n_train: int = 400, n_test: int = 100, size: int = 16) -> DataBundle:
    rng = np.random.default_rng(1)
    y_tr, y_te = balanced_labels(n_train, 4, rng), balanced_labels(n_test, 4, rng)
    x_tr, x_te = blob_images(y_tr, 4, size, size, rng)[:, None], blob_images(y_te, 4, size, size, rng)[:, None]
    return DataBundle("blobs", x_tr, y_tr, x_te, y_te, num_classes=4)


def test_vit_learns_tiny_images():
    torch.manual_seed(0)
    cfg = ViTConfig(patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64, epochs=6, batch_size=32, lr=1e-3)
    fam = ViTClassifier(cfg, tiny_images(), torch.device("cpu"))
    results = [{**fam.train_iteration(i), **fam.evaluate(i)} for i in range(cfg.epochs)]
    assert results[-1]["test_accuracy"] > 0.9 and results[-1]["train_loss"] < results[0]["train_loss"]
