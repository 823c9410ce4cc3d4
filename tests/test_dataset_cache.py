"""The decoded-array cache of the image datasets: hits, invalidation, unwritable and corrupt entries."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from datafiles import write_celeba, write_cifar_image_folder
from sweeplab.datasets import celeba as celeba_module
from sweeplab.datasets import torchvision_sets
from sweeplab.datasets._cache import CACHE_DIRNAME
from sweeplab.datasets.base import load_dataset

torch.set_num_threads(1)
from test_datasets import _touch_later


def _no_decoding(*args, **kwargs):
    raise AssertionError("decoded although the cache should have been used")


def test_celeba_cache_hit_and_invalidation(tmp_path, monkeypatch):
    from PIL import Image

    w = write_celeba(tmp_path, n=9)
    first = load_dataset("celeba", tmp_path)
    assert first.meta["cache"] == "stored"
    assert Path(first.meta["cache_file"]).parent == tmp_path / CACHE_DIRNAME
    with monkeypatch.context() as m:
        m.setattr(celeba_module, "decode_image_files", _no_decoding)
        second = load_dataset("celeba", tmp_path)
        # the cache holds images only: another attribute reuses it
        other_attr = load_dataset("celeba", tmp_path, options={"attribute": "Young"})
    assert second.meta["cache"] == "hit" and other_attr.meta["cache"] == "hit"
    for name in ("x_train", "x_val", "x_test", "y_train", "y_val", "y_test"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    # another image size is another entry
    assert load_dataset("celeba", tmp_path, options={"image_size": 16}).meta["cache"] == "stored"

    # a changed source image invalidates the entry
    Image.new("RGB", (89, 109), (255, 0, 0)).save(w["files"][0], format="JPEG")
    _touch_later(w["files"][0])
    third = load_dataset("celeba", tmp_path)
    assert third.meta["cache"] == "stored" and third.meta["cache_file"] != first.meta["cache_file"]
    assert np.abs(third.x_train[0].astype(int) - [[[255]], [[0]], [[0]]]).max() <= 3
    assert not Path(first.meta["cache_file"]).exists()  # the stale entry is gone
    assert np.array_equal(third.x_train[1:], first.x_train[1:])


def test_cifar_cache_hit_and_invalidation(tmp_path, monkeypatch):
    w = write_cifar_image_folder(tmp_path, n_per_class=2, classes=["cat", "dog", "emu"])
    first = load_dataset("cifar10", tmp_path)
    assert first.meta["cache"] == "stored"
    with monkeypatch.context() as m:
        m.setattr(torchvision_sets, "decode_image_files", _no_decoding)
        second = load_dataset("cifar10", tmp_path)
    assert second.meta["cache"] == "hit"
    assert np.array_equal(first.x_train, second.x_train)
    assert np.array_equal(first.x_test, second.x_test)
    # replacing a file by another class's image (new size and mtime) changes the entry
    src, dst = w["train"]["files"][0], w["train"]["files"][5]
    shutil.copy(src, dst)
    _touch_later(dst)
    third = load_dataset("cifar10", tmp_path)
    assert third.meta["cache"] == "stored"
    assert np.array_equal(third.x_train[5], third.x_train[0])
    assert not np.array_equal(third.x_train[5], first.x_train[5])
    # a new file is seen too
    shutil.copy(src, src.parent / "0099.jpg")
    assert load_dataset("cifar10", tmp_path).x_train.shape[0] == 7


def test_unwritable_cache_is_skipped_silently(tmp_path):
    write_celeba(tmp_path, n=5)
    (tmp_path / CACHE_DIRNAME).write_text("a file where the cache folder would go")
    for _ in range(2):
        b = load_dataset("celeba", tmp_path)
        assert b.meta["cache"] == "unwritable" and b.meta["cache_file"] is None
        assert b.x_train.shape[1:] == (3, 64, 64)


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
    write_celeba(tmp_path, n=5)
    first = load_dataset("celeba", tmp_path)
    entry = Path(first.meta["cache_file"])
    entry.write_bytes(entry.read_bytes()[:300])
    again = load_dataset("celeba", tmp_path)
    assert again.meta["cache"] == "stored"
    assert np.array_equal(again.x_train, first.x_train)


# --------------------------------------------------------------------------------------------
# the writers put a learnable class signal into the images
# --------------------------------------------------------------------------------------------
