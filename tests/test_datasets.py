"""The dataset readers, on tiny datasets written in the real formats by ``tests/datafiles.py``."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from datafiles import (CELEBA_ATTRIBUTES, idx_bytes, write_celeba, write_cifar_batches,
                       write_cifar_image_folder, write_mnist_idx)
from sweeplab.datasets import _images as images_module
from sweeplab.datasets._cache import CACHE_DIRNAME
from sweeplab.datasets.base import DatasetError, dataset_info, dataset_names, load_dataset

torch.set_num_threads(1)



def _pil_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def _touch_later(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


# --------------------------------------------------------------------------------------------
# registry and digits
# --------------------------------------------------------------------------------------------
def test_registry_holds_every_reader():
    names = set(dataset_names())
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "celeba"} <= names
    assert dataset_info("digits").needs_root is False
    for name in ("mnist", "fashion_mnist", "cifar10", "celeba"):
        assert dataset_info(name).needs_root is True


def test_digits_is_a_deterministic_stratified_split_of_sklearn_digits():
    from sklearn.datasets import load_digits

    b = load_dataset("digits")
    assert b.x_train.shape == (1437, 1, 8, 8) and b.x_test.shape == (360, 1, 8, 8)
    assert b.x_train.dtype == np.uint8 and b.y_train.dtype == np.int64
    assert b.num_classes == 10 and b.x_train.max() == 255 and b.x_train.min() == 0
    # every test class holds 20 % of its images (stratified), +- rounding
    raw = load_digits()
    per_class = np.bincount(raw.target)
    assert np.all(np.abs(np.bincount(b.y_test, minlength=10) - 0.2 * per_class) <= 1)
    # train + test is exactly the scaled original set of (image, label) pairs
    scaled = np.rint(raw.images * 255 / 16).astype(np.uint8)
    original = sorted(zip(map(bytes, scaled), raw.target.tolist()))
    ours = sorted(zip(map(bytes, np.concatenate([b.x_train, b.x_test])[:, 0]),
                      np.concatenate([b.y_train, b.y_test]).tolist()))
    assert ours == original
    again = load_dataset("digits")
    assert np.array_equal(again.x_test, b.x_test) and np.array_equal(again.y_train, b.y_train)
    other = load_dataset("digits", options={"seed": 1})
    assert not np.array_equal(other.y_test, b.y_test)


@pytest.mark.parametrize("bad", [0, 1.0, -0.1, "0.2", True])
def test_digits_rejects_a_bad_test_size(bad):
    with pytest.raises(DatasetError, match="test_size"):
        load_dataset("digits", options={"test_size": bad})


def test_unknown_option_names_the_option():
    with pytest.raises(DatasetError, match="data.options for 'digits'.*colour"):
        load_dataset("digits", options={"colour": True})


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder,name", [("MNIST", "mnist"), ("FashionMNIST", "fashion_mnist")])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, folder, name, gz):
    w = write_mnist_idx(tmp_path, folder, n_train=60, n_test=30, gz=gz)
    b = load_dataset(name, tmp_path)
    assert b.x_train.shape == (60, 1, 28, 28) and b.x_test.shape == (30, 1, 28, 28)
    assert b.x_train.dtype == np.uint8 and b.y_train.dtype == np.int64
    assert np.array_equal(b.x_train, w["x_train"]) and np.array_equal(b.x_test, w["x_test"])
    assert np.array_equal(b.y_train, w["y_train"]) and np.array_equal(b.y_test, w["y_test"])
    assert b.num_classes == 10 and len(b.class_names) == 10
    assert b.class_names[0] == ("0 - zero" if folder == "MNIST" else "T-shirt/top")
    if gz:  # unpacked beside the .gz, as torchvision's own download does
        assert (w["raw_dir"] / "train-images-idx3-ubyte").is_file()


def test_idx_with_both_gz_and_unpacked_files(tmp_path):
    w = write_mnist_idx(tmp_path, "MNIST", n_train=20, n_test=10, gz=True, unpacked=True)
    b = load_dataset("mnist", tmp_path)
    assert np.array_equal(b.x_test, w["x_test"])


def test_idx_unpack_failure_falls_back_to_a_temporary_copy(tmp_path):
    w = write_mnist_idx(tmp_path, "MNIST", n_train=20, n_test=10, gz=True)
    # a directory where the unpacked file should go: writing it fails as on a read-only root
    (w["raw_dir"] / "t10k-images-idx3-ubyte").mkdir()
    b = load_dataset("mnist", tmp_path)
    assert np.array_equal(b.x_test, w["x_test"]) and np.array_equal(b.x_train, w["x_train"])


def test_idx_missing_file_is_named(tmp_path):
    w = write_mnist_idx(tmp_path, "FashionMNIST", n_train=20, n_test=10)
    (w["raw_dir"] / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\[\.gz\].*materialize\.sh"):
        load_dataset("fashion_mnist", tmp_path)


def test_idx_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="MNIST files missing"):
        load_dataset("mnist", tmp_path)


def test_idx_truncated_file(tmp_path):
    w = write_mnist_idx(tmp_path, "MNIST", n_train=20, n_test=10, gz=False)
    path = w["raw_dir"] / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte' has \d+ bytes but its IDX "
                                           r"header \(20x28x28\).*truncated"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_idx_gzip_that_does_not_decompress(tmp_path, damage):
    w = write_mnist_idx(tmp_path, "MNIST", n_train=50, n_test=10)
    gz_path = w["raw_dir"] / "train-images-idx3-ubyte.gz"
    data = gz_path.read_bytes()
    gz_path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a gzip" * 50)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz' does not decompress"):
        load_dataset("mnist", tmp_path)
    assert not list(w["raw_dir"].glob("*.part*"))  # no half-written file left behind
    assert not (w["raw_dir"] / "train-images-idx3-ubyte").exists()


def test_idx_wrong_magic_number(tmp_path):
    w = write_mnist_idx(tmp_path, "MNIST", n_train=20, n_test=10, gz=False)
    raw = w["raw_dir"]
    shutil.copy(raw / "t10k-labels-idx1-ubyte", raw / "t10k-images-idx3-ubyte")
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte' is not an IDX file.*00000803"):
        load_dataset("mnist", tmp_path)


def test_idx_image_and_label_counts_differ(tmp_path):
    w = write_mnist_idx(tmp_path, "MNIST", n_train=20, n_test=10, gz=False)
    (w["raw_dir"] / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    with pytest.raises(DatasetError, match="holds 10 images but t10k-labels-idx1-ubyte holds 7"):
        load_dataset("mnist", tmp_path)


def test_idx_label_out_of_range(tmp_path):
    w = write_mnist_idx(tmp_path, "MNIST", n_train=20, n_test=10, gz=False)
    (w["raw_dir"] / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(10, 12, np.uint8)))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte. holds label 12 outside 0..9"):
        load_dataset("mnist", tmp_path)


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", ["torchvision", "pil"])
def test_cifar_image_folder_round_trip_matches_torchvision_imagefolder(tmp_path, monkeypatch,
                                                                       decoder):
    from torchvision.datasets import ImageFolder

    monkeypatch.setattr(images_module, "DECODER", decoder)
    w = write_cifar_image_folder(tmp_path, n_per_class=3, n_test_per_class=2)
    b = load_dataset("cifar10", tmp_path)
    assert b.x_train.shape == (30, 3, 32, 32) and b.x_test.shape == (20, 3, 32, 32)
    assert b.x_train.dtype == np.uint8 and b.y_train.dtype == np.int64
    assert b.class_names == w["classes"] and b.num_classes == 10
    ref = ImageFolder(str(w["base"] / "train"))
    assert ref.classes == b.class_names
    assert np.array_equal(b.y_train, np.asarray(ref.targets))
    for i, (path, _) in enumerate(ref.samples):
        assert np.abs(_pil_rgb(Path(path)).astype(int) - b.x_train[i]).max() <= 1
    # JPEG at quality 95 stays within a few grey levels of the written pixels
    assert np.abs(b.x_test.astype(int) - w["test"]["pixels"]).mean() < 4
    assert np.array_equal(b.y_test, w["test"]["labels"])


def test_cifar_root_may_be_the_cifar10_folder_and_other_sizes_work(tmp_path):
    w = write_cifar_image_folder(tmp_path, n_per_class=1, size=16, classes=["a", "b", "c"])
    b = load_dataset("cifar10", w["base"], options={"cache": False})
    assert b.x_train.shape == (3, 3, 16, 16) and b.class_names == ["a", "b", "c"]
    assert b.num_classes == 3 and b.meta["cache"] == "disabled"
    assert not (w["base"] / CACHE_DIRNAME).exists()


@pytest.mark.parametrize("decoder", ["torchvision", "pil"])
def test_cifar_corrupt_jpeg_is_named(tmp_path, monkeypatch, decoder):
    monkeypatch.setattr(images_module, "DECODER", decoder)
    w = write_cifar_image_folder(tmp_path, n_per_class=2, classes=["cat", "dog"])
    bad = w["test"]["files"][3]
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DatasetError, match=rf"{bad.name}' does not decode.*corrupt or truncated"):
        load_dataset("cifar10", tmp_path)


def test_cifar_image_of_another_size_is_named(tmp_path):
    from PIL import Image

    w = write_cifar_image_folder(tmp_path, n_per_class=2, classes=["cat", "dog"])
    odd = w["train"]["files"][2]
    Image.new("RGB", (20, 24), (10, 20, 30)).save(odd, format="JPEG")
    with pytest.raises(DatasetError, match=rf"dog/{odd.name}' is 20x24 pixels.*32x32"):
        load_dataset("cifar10", tmp_path)


def test_cifar_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"no CIFAR-10 under data.root.*cifar10/\{train,test\}"):
        load_dataset("cifar10", tmp_path)
    w = write_cifar_image_folder(tmp_path, n_per_class=1, classes=["cat", "dog"])
    shutil.rmtree(w["base"] / "test" / "dog")
    with pytest.raises(DatasetError, match="class folders differ"):
        load_dataset("cifar10", tmp_path)
    (w["base"] / "test" / "dog").mkdir()
    with pytest.raises(DatasetError, match=r"test/dog' holds no \.jpg"):
        load_dataset("cifar10", tmp_path)
    shutil.rmtree(w["base"] / "test")
    with pytest.raises(DatasetError, match=r"cifar10/test' does not exist"):
        load_dataset("cifar10", tmp_path)


def test_cifar_pickled_batches_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    w = write_cifar_batches(tmp_path, n_train=25, n_test=10)
    # torchvision refuses batches whose md5 is not the official one ...
    with pytest.raises(DatasetError, match="md5"):
        load_dataset("cifar10", tmp_path)
    # ... and reads them once that check only requires the file to exist
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    b = load_dataset("cifar10", tmp_path)
    assert np.array_equal(b.x_train, w["x_train"]) and np.array_equal(b.y_train, w["y_train"])
    assert np.array_equal(b.x_test, w["x_test"]) and b.class_names == w["classes"]


# --------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------
def test_celeba_round_trip_matches_torchvision_resize_centercrop(tmp_path):
    from PIL import Image
    from torchvision import transforms

    w = write_celeba(tmp_path, n=20)
    assert sorted(p.name for p in w["base"].iterdir()) == [
        "img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"]
    b = load_dataset("celeba", tmp_path)
    part = w["partition"]
    assert b.x_train.shape == ((part == 0).sum(), 3, 64, 64)
    assert b.x_val.shape == ((part == 1).sum(), 3, 64, 64)
    assert b.x_test.shape == ((part == 2).sum(), 3, 64, 64)
    assert np.array_equal(b.y_train, w["smiling"][part == 0])
    assert np.array_equal(b.y_val, w["smiling"][part == 1])
    assert np.array_equal(b.y_test, w["smiling"][part == 2])
    assert b.num_classes == 2 and b.class_names == ["not Smiling", "Smiling"]
    assert b.y_train.dtype == np.int64 and b.x_train.dtype == np.uint8
    assert b.meta["attribute_index"] == 31
    tf = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64)])
    for i, path in enumerate(np.asarray(w["files"], dtype=object)[part == 2]):
        with Image.open(path) as im:
            ref = np.asarray(tf(im.convert("RGB"))).transpose(2, 0, 1)
        assert np.abs(ref.astype(int) - b.x_test[i]).max() <= 2


def test_celeba_options(tmp_path):
    w = write_celeba(tmp_path, n=12)
    part = w["partition"]
    male = load_dataset("celeba", w["base"], options={"attribute": "Male", "image_size": 32})
    col = CELEBA_ATTRIBUTES.index("Male")
    assert np.array_equal(male.y_train, (w["values"][part == 0, col] == 1).astype(np.int64))
    assert male.class_names == ["not Male", "Male"] and male.x_train.shape[1:] == (3, 32, 32)
    native = load_dataset("celeba", tmp_path, options={"image_size": None})
    assert native.x_test.shape[1:] == (3, 109, 89)
    test_files = np.asarray(w["files"], dtype=object)[part == 2]
    assert all(np.abs(_pil_rgb(f).astype(int) - x).max() <= 1
               for f, x in zip(test_files, native.x_test))
    small = load_dataset("celeba", tmp_path, options={"limit": 2})
    assert len(small.x_train) == len(small.x_val) == len(small.x_test) == 2
    assert np.array_equal(small.y_train, w["smiling"][part == 0][:2])


def test_celeba_without_valid_partition_has_no_validation_split(tmp_path):
    w = write_celeba(tmp_path, n=6)
    lines = w["partition_file"].read_text().splitlines()
    w["partition_file"].write_text("".join(ln.replace(" 1", " 0") + "\n" for ln in lines))
    b = load_dataset("celeba", tmp_path)
    assert b.x_val is None and b.y_val is None
    assert len(b.x_train) + len(b.x_test) == 6


@pytest.mark.parametrize("options,pattern", [
    ({"attribute": "smiling"}, r"attribute='smiling' is not an attribute.*did you mean 'Smiling'"),
    ({"attribute": 3}, r"attribute=3 .* must be an attribute name"),
    ({"image_size": 0}, r"image_size=0 .* positive number of pixels"),
    ({"image_size": "64"}, r"image_size='64'"),
    ({"limit": 0}, r"limit=0 .* positive number of images"),
])
def test_celeba_bad_options(tmp_path, options, pattern):
    write_celeba(tmp_path, n=4)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset("celeba", tmp_path, options=options)


def test_celeba_file_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"no CelebA under data.root.*list_attr_celeba\.txt"):
        load_dataset("celeba", tmp_path)
    w = write_celeba(tmp_path, n=6)
    attr_text = w["attr_file"].read_text()

    w["attr_file"].write_text("\n".join(attr_text.splitlines()[:5]) + "\n")
    with pytest.raises(DatasetError, match=r"list_attr_celeba\.txt' announces 6 images .* lists 3"):
        load_dataset("celeba", tmp_path)
    w["attr_file"].write_text(attr_text.replace("000002.jpg -1", "000002.jpg  0")
                              .replace("000002.jpg  1", "000002.jpg  0"))
    with pytest.raises(DatasetError, match=r"line 4 holds a value other than -1/1"):
        load_dataset("celeba", tmp_path)
    w["attr_file"].write_text(attr_text.replace("000006.jpg", "000006.jpg  1"))
    with pytest.raises(DatasetError, match=r"line 8 has 41 values for 40 attributes"):
        load_dataset("celeba", tmp_path)
    w["attr_file"].write_text(attr_text)

    w["files"][4].unlink()
    with pytest.raises(DatasetError, match=r"1 images listed .* missing .*\(first: 000005\.jpg\)"):
        load_dataset("celeba", tmp_path)
    w["files"][4].write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    with pytest.raises(DatasetError, match=r"000005\.jpg' does not decode"):
        load_dataset("celeba", tmp_path)

    w["partition_file"].unlink()
    with pytest.raises(DatasetError, match=r"list_eval_partition\.txt' is missing"):
        load_dataset("celeba", tmp_path)


# --------------------------------------------------------------------------------------------
# the decoded-array cache
# --------------------------------------------------------------------------------------------
def test_written_images_carry_a_learnable_signal(tmp_path):
    from sklearn.neighbors import NearestCentroid

    write_mnist_idx(tmp_path, "MNIST", n_train=200, n_test=100)
    write_cifar_image_folder(tmp_path, n_per_class=10, n_test_per_class=5)
    write_celeba(tmp_path, n=60)
    checks = [("mnist", {}, 0.1), ("cifar10", {}, 0.1), ("celeba", {"image_size": 16}, 0.5)]
    for name, options, chance in checks:
        b = load_dataset(name, tmp_path, options=options)
        clf = NearestCentroid().fit(
            b.x_train.reshape(len(b.x_train), -1) / 255.0, b.y_train)
        acc = clf.score(b.x_test.reshape(len(b.x_test), -1) / 255.0, b.y_test)
        assert acc >= chance + 0.3, (name, acc)
