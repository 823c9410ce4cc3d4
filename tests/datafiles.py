"""Writers of tiny datasets in the REAL on-disk formats, for every test of the suite.

Plain functions (no pytest fixtures): call them with a ``tmp_path`` and point a job's
``data.root`` at it. Each writes exactly the layout the readers in ``sweeplab.datasets`` (and
torchvision) expect, and puts a class signal into the images that a small model can learn:

- :func:`write_mnist_idx`: ``root/MNIST/raw/*-ubyte[.gz]`` (or ``FashionMNIST``), real IDX headers;
  class k is a bright Gaussian blob at position k of a ring, plus noise.
- :func:`write_cifar_image_folder`: ``root/cifar10/{train,test}/<class>/NNNN.jpg``; class k has its
  own background hue and a blob at its own position.
- :func:`write_cifar_batches`: ``root/cifar-10-batches-py/`` pickled batches (torchvision layout;
  they cannot match torchvision's md5 check, see the function).
- :func:`write_celeba`: ``root/celeba/`` with ``img_align_celeba/*.jpg``, ``list_attr_celeba.txt``
  and ``list_eval_partition.txt``; ``Smiling`` faces have a wide bright mouth, the others a thin
  dark one.

Every writer is deterministic given ``seed`` and returns a dict with the paths, counts, labels
and the pixels that went into the files (before JPEG compression for JPEG datasets).
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: The ten CIFAR-10 classes in torchvision / folder order.
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]

#: The 40 attribute names of ``list_attr_celeba.txt``, in file order (``Smiling`` is index 31).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young").split()

#: The four IDX files of an MNIST-style dataset.
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``int64 [n]`` labels with every class as equally often as possible, shuffled."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def blob_images(labels: np.ndarray, num_classes: int, height: int, width: int,
                rng: np.random.Generator, noise: float = 40.0) -> np.ndarray:
    """Grey images with one Gaussian blob whose position on a ring encodes the class.

    Args:
        labels: ``int [N]`` class indices.
        num_classes: number of ring positions.
        height, width: image size in pixels.
        rng: random generator (noise and a +-1 pixel jitter of the blob).
        noise: peak of the uniform background noise, in grey levels.

    Returns:
        ``uint8 [N, height, width]``.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    angle = 2 * np.pi * labels / num_classes
    cy = height / 2 + 0.3 * height * np.sin(angle) + rng.integers(-1, 2, len(labels))
    cx = width / 2 + 0.3 * width * np.cos(angle) + rng.integers(-1, 2, len(labels))
    sigma = max(1.0, 0.09 * min(height, width))
    d2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    img = 215 * np.exp(-d2 / (2 * sigma ** 2)) + rng.uniform(0, noise, (len(labels), height, width))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a ``uint8`` array (1 to 3 dims) as an IDX file: magic ``0x08nd``, big-endian dims."""
    assert array.dtype == np.uint8 and 1 <= array.ndim <= 3
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def _save_jpeg(path: Path, chw: np.ndarray, quality: int = 95) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))).save(
        path, format="JPEG", quality=quality)


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# --------------------------------------------------------------------------------------------
def write_mnist_idx(root: str | Path, name: str = "MNIST", n_train: int = 200, n_test: int = 100,
                    gz: bool = True, unpacked: bool | None = None, seed: int = 0,
                    size: int = 28) -> dict[str, Any]:
    """Write a tiny MNIST-style dataset as real IDX files under ``root/<name>/raw/``.

    Args:
        root: the data root (``data.root`` of a job).
        name: ``"MNIST"`` or ``"FashionMNIST"`` (torchvision's folder name).
        n_train, n_test: number of images per split (10 balanced classes).
        gz: write the gzipped files ``*-ubyte.gz`` (as distributed).
        unpacked: also write the unpacked ``*-ubyte`` files; default ``not gz``. When only the
            ``.gz`` files are written, stale unpacked files of an earlier call are removed.
        seed: seed of labels and pixels.
        size: image side in pixels (28 for the real datasets).

    Returns:
        dict with ``root``, ``raw_dir``, ``files`` (name -> list of written paths),
        ``x_train``/``x_test`` ``uint8 [N, 1, size, size]``, ``y_train``/``y_test`` ``int64``,
        ``n_train``, ``n_test``, ``num_classes``.
    """
    if unpacked is None:
        unpacked = not gz
    rng = np.random.default_rng(seed)
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"root": Path(root), "raw_dir": raw, "files": {}, "num_classes": 10,
                           "n_train": n_train, "n_test": n_test}
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = balanced_labels(n, 10, rng)
        x = blob_images(y, 10, size, size, rng)
        key = "train" if split == "train" else "test"
        out[f"x_{key}"], out[f"y_{key}"] = x[:, None], y
        for fname, arr in ((f"{split}-images-idx3-ubyte", x),
                           (f"{split}-labels-idx1-ubyte", y.astype(np.uint8))):
            data = idx_bytes(arr)
            written = []
            if gz:
                (raw / (fname + ".gz")).write_bytes(gzip.compress(data, mtime=0))
                written.append(raw / (fname + ".gz"))
            if unpacked:
                (raw / fname).write_bytes(data)
                written.append(raw / fname)
            else:
                (raw / fname).unlink(missing_ok=True)
            out["files"][fname] = written
    return out


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------
def colour_blob_images(labels: np.ndarray, num_classes: int, size: int,
                       rng: np.random.Generator) -> np.ndarray:
    """RGB images whose background hue and blob position encode the class.

    Returns:
        ``uint8 [N, 3, size, size]``.
    """
    grey = blob_images(labels, num_classes, size, size, rng, noise=30.0).astype(np.float64)
    hue = 2 * np.pi * labels / num_classes
    base = 90 + 60 * np.stack([np.cos(hue), np.cos(hue - 2.1), np.cos(hue + 2.1)], axis=1)
    img = 0.6 * grey[:, None] + base[:, :, None, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_cifar_image_folder(root: str | Path, n_per_class: int = 4, size: int = 32,
                             n_test_per_class: int | None = None,
                             classes: Sequence[str] = CIFAR10_CLASSES, seed: int = 0,
                             quality: int = 95) -> dict[str, Any]:
    """Write ``root/cifar10/{train,test}/<class>/NNNN.jpg`` (the materialize.sh layout).

    Args:
        root: the data root.
        n_per_class: training images per class.
        size: image side in pixels (32 for CIFAR-10).
        n_test_per_class: test images per class (default ``n_per_class``).
        classes: class folder names (default the ten CIFAR-10 classes).
        seed: seed of the pixels.
        quality: JPEG quality (PIL).

    Returns:
        dict with ``root``, ``base`` (``root/cifar10``), ``classes`` (sorted, = class index
        order), and per split ``train``/``test``: ``files`` (paths in reader order),
        ``labels`` ``int64 [N]``, ``pixels`` ``uint8 [N, 3, size, size]`` (before JPEG);
        ``n_train``, ``n_test``.
    """
    rng = np.random.default_rng(seed)
    classes = sorted(classes)
    base = Path(root) / "cifar10"
    n_test_per_class = n_per_class if n_test_per_class is None else n_test_per_class
    out: dict[str, Any] = {"root": Path(root), "base": base, "classes": classes}
    for split, per in (("train", n_per_class), ("test", n_test_per_class)):
        labels = np.repeat(np.arange(len(classes)), per).astype(np.int64)
        pixels = colour_blob_images(labels, len(classes), size, rng)
        files = []
        for k, cls in enumerate(classes):
            folder = base / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per):
                path = folder / f"{j:04d}.jpg"
                _save_jpeg(path, pixels[k * per + j], quality)
                files.append(path)
        out[split] = {"files": files, "labels": labels, "pixels": pixels}
        out[f"n_{split}"] = len(files)
    return out


def write_cifar_batches(root: str | Path, n_train: int = 50, n_test: int = 20,
                        seed: int = 0) -> dict[str, Any]:
    """Write ``root/cifar-10-batches-py/`` in the official pickled format torchvision reads.

    Five ``data_batch_i`` files (``{"data": uint8 [n, 3072] (R, G, B planes), "labels": [...]}``),
    ``test_batch`` and ``batches.meta`` (``label_names``). torchvision checks each file's md5
    against the official archive, which these cannot match: a reader test has to relax
    ``torchvision.datasets.cifar.check_integrity`` or expect the md5 failure.

    Returns:
        dict with ``root``, ``folder``, ``classes``, ``x_train``/``x_test``
        ``uint8 [N, 3, 32, 32]``, ``y_train``/``y_test`` ``int64``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"root": Path(root), "folder": folder, "classes": list(CIFAR10_CLASSES)}
    for key, n in (("train", n_train), ("test", n_test)):
        y = balanced_labels(n, 10, rng)
        x = colour_blob_images(y, 10, 32, rng)
        out[f"x_{key}"], out[f"y_{key}"] = x, y
    parts = np.array_split(np.arange(n_train), 5)
    for i, idx in enumerate(parts, start=1):
        batch = {"batch_label": f"training batch {i} of 5",
                 "data": out["x_train"][idx].reshape(len(idx), -1),
                 "labels": out["y_train"][idx].tolist(),
                 "filenames": [f"img_{j}.png" for j in idx]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {"batch_label": "testing batch 1 of 1", "data": out["x_test"].reshape(n_test, -1),
            "labels": out["y_test"].tolist(), "filenames": [f"t_{j}.png" for j in range(n_test)]}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": len(parts[0]),
            "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return out


# --------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------
def face_images(smiling: np.ndarray, width: int, height: int,
                rng: np.random.Generator) -> np.ndarray:
    """Crude RGB faces: skin ellipse, two eyes and a mouth that is wide and bright when smiling.

    Args:
        smiling: ``bool [N]``.
        width, height: image size in pixels (CelebA's half resolution is 89 x 109).
        rng: random generator (skin tone, background, noise).

    Returns:
        ``uint8 [N, 3, height, width]``.
    """
    n = len(smiling)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = height * 0.5, width * 0.5
    face = ((yy - cy) / (0.38 * height)) ** 2 + ((xx - cx) / (0.36 * width)) ** 2 <= 1
    eyes = np.zeros((height, width), bool)
    for ex in (cx - 0.15 * width, cx + 0.15 * width):
        eyes |= ((yy - (cy - 0.1 * height)) ** 2 + (xx - ex) ** 2) <= (0.04 * width) ** 2
    mouth_y = cy + 0.2 * height
    wide = (np.abs(yy - mouth_y) <= 0.06 * height) & (np.abs(xx - cx) <= 0.2 * width)
    thin = (np.abs(yy - mouth_y) <= 0.015 * height + 0.5) & (np.abs(xx - cx) <= 0.1 * width)
    imgs = np.empty((n, 3, height, width))
    for i in range(n):
        background = rng.uniform(20, 120, 3)
        skin = np.array([200, 150, 120]) * rng.uniform(0.7, 1.1)
        img = np.where(face[None], skin[:, None, None], background[:, None, None])
        img = np.where(eyes[None], 30.0, img)
        if smiling[i]:
            img = np.where(wide[None], 245.0, img)
        else:
            img = np.where(thin[None], 40.0, img)
        imgs[i] = img + rng.normal(0, 8, img.shape)
    return np.clip(np.rint(imgs), 0, 255).astype(np.uint8)


def write_celeba(root: str | Path, n: int = 30, size: tuple[int, int] = (89, 109),
                 seed: int = 0, partition_fractions: tuple[float, float] = (0.6, 0.2),
                 quality: int = 95) -> dict[str, Any]:
    """Write ``root/celeba/`` in the standard CelebA layout (only the three files the reader needs).

    ``img_align_celeba/000001.jpg ...``, ``list_attr_celeba.txt`` (count line, the 40 real
    attribute names, ``filename v1 .. v40`` with -1/1 in CelebA's column layout) and
    ``list_eval_partition.txt`` (the first ``partition_fractions[0]`` of the images in
    partition 0, the next ``partition_fractions[1]`` in 1, the rest in 2, as in the real file).
    ``Smiling`` is balanced and drawn in the image (see :func:`face_images`); every other
    attribute is random.

    Args:
        root: the data root.
        n: number of images (at least 3, so every partition gets one).
        size: ``(width, height)`` in pixels (PIL order; CelebA's aligned images at half
            resolution are 89 x 109).
        seed: seed of attributes and pixels.
        partition_fractions: shares of partitions 0 (train) and 1 (valid).
        quality: JPEG quality.

    Returns:
        dict with ``root``, ``base`` (``root/celeba``), ``image_dir``, ``attr_file``,
        ``partition_file``, ``files`` (image paths in file order), ``attributes`` (the 40 names),
        ``values`` ``int8 [n, 40]`` (-1/1), ``smiling`` ``int64 [n]`` (0/1), ``partition``
        ``int64 [n]`` (0/1/2), ``pixels`` ``uint8 [n, 3, height, width]`` (before JPEG).
    """
    assert n >= 3, "write_celeba needs n >= 3 so that each partition gets an image"
    rng = np.random.default_rng(seed)
    width, height = size
    base = Path(root) / "celeba"
    image_dir = base / "img_align_celeba"
    image_dir.mkdir(parents=True, exist_ok=True)
    values = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, len(CELEBA_ATTRIBUTES)))
    smiling = balanced_labels(n, 2, rng)
    values[:, CELEBA_ATTRIBUTES.index("Smiling")] = np.where(smiling == 1, 1, -1)
    n_train = max(1, int(round(n * partition_fractions[0])))
    n_valid = max(1, int(round(n * partition_fractions[1])))
    n_train = min(n_train, n - n_valid - 1)
    partition = np.full(n, 2, dtype=np.int64)
    partition[:n_train] = 0
    partition[n_train:n_train + n_valid] = 1
    pixels = face_images(smiling.astype(bool), width, height, rng)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    files = []
    for name, img in zip(names, pixels):
        _save_jpeg(image_dir / name, img, quality)
        files.append(image_dir / name)
    attr_lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    attr_lines += [name + " " + " ".join(f"{v:2d}" for v in row)
                   for name, row in zip(names, values)]
    (base / "list_attr_celeba.txt").write_text("\n".join(attr_lines) + "\n")
    (base / "list_eval_partition.txt").write_text(
        "".join(f"{name} {p}\n" for name, p in zip(names, partition)))
    return {"root": Path(root), "base": base, "image_dir": image_dir,
            "attr_file": base / "list_attr_celeba.txt",
            "partition_file": base / "list_eval_partition.txt", "files": files,
            "attributes": list(CELEBA_ATTRIBUTES), "values": values, "smiling": smiling,
            "partition": partition, "pixels": pixels}
