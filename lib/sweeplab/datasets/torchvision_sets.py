"""MNIST, Fashion-MNIST and CIFAR-10, read through torchvision (or, for CIFAR-10, an image folder).

Layouts under ``root`` (what ``shared/data/materialize.sh`` writes):

- ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` and the same under
  ``root/FashionMNIST/raw/``: the original IDX files, read by ``torchvision.datasets.MNIST`` /
  ``FashionMNIST``. Where only the ``.gz`` is present it is unpacked beside it first, as
  torchvision's own download does (into a temporary folder if the root is read-only).
- CIFAR-10: ``root/cifar-10-batches-py/`` (the official pickled batches) is read by
  ``torchvision.datasets.CIFAR10``; otherwise the image-folder tree
  ``root/cifar10/{train,test}/<class>/*.jpg`` (``torchvision.datasets.ImageFolder`` layout: class
  index = position of the class folder in sorted order; ``root`` may also be the ``cifar10``
  folder itself) is decoded with :mod:`sweeplab.datasets._images` and cached.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from sweeplab.datasets._cache import cached_arrays
from sweeplab.datasets._images import decode_image_files, scan_image_files
from sweeplab.datasets.base import DataBundle, DatasetError, register_dataset

#: The four IDX files of MNIST-style datasets and the IDX magic number each must carry
#: (0x0803: unsigned bytes, 3 dimensions; 0x0801: unsigned bytes, 1 dimension).
IDX_FILES = {
    "train-images-idx3-ubyte": 0x0803,
    "train-labels-idx1-ubyte": 0x0801,
    "t10k-images-idx3-ubyte": 0x0803,
    "t10k-labels-idx1-ubyte": 0x0801,
}

_FIX = "re-run shared/data/materialize.sh DEST and point data.root at DEST"


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# --------------------------------------------------------------------------------------------
def check_idx_file(path: Path, magic: int) -> tuple[int, ...]:
    """Check an unpacked IDX file's header against its size.

    Args:
        path: the IDX file.
        magic: expected magic number (``0x0803`` for images, ``0x0801`` for labels).

    Returns:
        The dimensions from the header, e.g. ``(60000, 28, 28)``.

    Raises:
        DatasetError: wrong magic number, or a size that does not match the header (truncated).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
        if len(head) < 4 or int.from_bytes(head, "big") != magic:
            raise DatasetError(
                f"{str(path)!r} is not an IDX file of the expected kind (magic number "
                f"{head.hex() or 'missing'}, expected {magic:08x}); replace it with the original "
                f"file: {_FIX}")
        nd = magic & 0xFF
        dims_raw = fh.read(4 * nd)
    if len(dims_raw) < 4 * nd:
        raise DatasetError(f"{str(path)!r} is truncated inside its IDX header; {_FIX}")
    dims = tuple(int.from_bytes(dims_raw[4 * i:4 * i + 4], "big") for i in range(nd))
    expected = 4 + 4 * nd + int(np.prod(dims))
    if size != expected:
        raise DatasetError(
            f"{str(path)!r} has {size} bytes but its IDX header ({'x'.join(map(str, dims))}) "
            f"implies {expected}: the file is truncated or corrupt. Delete it (it is re-extracted "
            f"from its .gz if that is present) or {_FIX}")
    return dims


def _gunzip(src: Path, dst: Path) -> None:
    part = dst.with_name(dst.name + f".part{os.getpid()}")
    try:
        with gzip.open(src, "rb") as fin, open(part, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(part, dst)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        part.unlink(missing_ok=True)
        raise DatasetError(
            f"{str(src)!r} does not decompress ({exc}): the gzip file is truncated or corrupt; "
            f"replace it with the original: {_FIX}") from None
    except OSError:
        part.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _unpacked_root(root: Path, folder: str) -> Iterator[Path]:
    """Yield a root under which ``folder/raw`` holds all four unpacked IDX files.

    Missing unpacked files are gunzipped from their ``.gz`` in place; when the raw folder cannot
    be written, into a temporary root that is removed afterwards.
    """
    raw = root / folder / "raw"
    todo = [name for name in IDX_FILES if not (raw / name).is_file()]
    missing = [name for name in todo if not (raw / (name + ".gz")).is_file()]
    if missing:
        listed = ", ".join(f"{n}[.gz]" for n in missing)
        raise DatasetError(
            f"{folder} files missing in {str(raw)!r}: {listed}. Expected the torchvision layout "
            f"root/{folder}/raw/*-ubyte[.gz]: {_FIX}, or set data.download: true where there is "
            "internet")
    try:
        for name in todo:
            _gunzip(raw / (name + ".gz"), raw / name)
        unpacked_in_place = True
    except OSError:  # read-only root: unpack into a temporary copy instead
        unpacked_in_place = False
    if unpacked_in_place:
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="sweeplab-idx-") as tmp:
        tmp_raw = Path(tmp) / folder / "raw"
        tmp_raw.mkdir(parents=True)
        for name in IDX_FILES:
            if name in todo:
                _gunzip(raw / (name + ".gz"), tmp_raw / name)
            else:
                os.symlink((raw / name).resolve(), tmp_raw / name)
        yield Path(tmp)


def _load_idx_dataset(cls_name: str, bundle_name: str, root: Path, download: bool) -> DataBundle:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    raw = root / cls_name / "raw"
    have_files = all((raw / n).is_file() or (raw / (n + ".gz")).is_file() for n in IDX_FILES)
    if download and not have_files:
        try:
            cls(str(root), train=True, download=True)
        except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError
            raise DatasetError(
                f"download of {cls_name} into {str(root)!r} failed ({str(exc).strip()[:300]}); "
                f"without internet, {_FIX}") from None
    with _unpacked_root(root, cls_name) as use_root:
        use_raw = use_root / cls_name / "raw"
        dims = {name: check_idx_file(use_raw / name, magic) for name, magic in IDX_FILES.items()}
        for split in ("train", "t10k"):
            n_img = dims[f"{split}-images-idx3-ubyte"][0]
            n_lab = dims[f"{split}-labels-idx1-ubyte"][0]
            if n_img != n_lab:
                raise DatasetError(
                    f"{str(raw / (split + '-images-idx3-ubyte'))!r} holds {n_img} images but "
                    f"{split}-labels-idx1-ubyte holds {n_lab} labels; the files come from "
                    f"different datasets: {_FIX}")
        try:
            train = cls(str(use_root), train=True, download=False)
            test = cls(str(use_root), train=False, download=False)
        except (RuntimeError, AssertionError, ValueError, TypeError, OSError) as exc:
            raise DatasetError(f"torchvision.datasets.{cls_name} could not read {str(raw)!r} "
                               f"({type(exc).__name__}: {exc}); {_FIX}") from None
        classes = list(train.classes)
        out = {}
        for split, ds in (("train", train), ("test", test)):
            x = ds.data.numpy()[:, None]
            y = ds.targets.numpy().astype(np.int64)
            bad = (y < 0) | (y >= len(classes))
            if bad.any():
                label_file = raw / f"{'train' if split == 'train' else 't10k'}-labels-idx1-ubyte"
                raise DatasetError(
                    f"{str(label_file)!r} holds label {int(y[bad][0])} outside "
                    f"0..{len(classes) - 1}: {_FIX}")
            out[split] = (x, y)
    return DataBundle(
        name=bundle_name, x_train=out["train"][0], y_train=out["train"][1],
        x_test=out["test"][0], y_test=out["test"][1], num_classes=len(classes),
        class_names=classes,
        meta={"source": str(raw), "reader": f"torchvision.datasets.{cls_name}"},
    )


@register_dataset("mnist")
def mnist(root: Path, download: bool = False) -> DataBundle:
    """MNIST handwritten digits (60,000 train + 10,000 test, 28x28 grey), via torchvision.

    Source: LeCun et al., the original IDX files under ``root/MNIST/raw/`` (``.gz`` or unpacked).

    Args:
        root: folder holding ``MNIST/raw/`` (the ``DEST`` of ``materialize.sh``).
        download: let torchvision download missing files (needs internet).

    Returns:
        ``x_*`` ``uint8 [N, 1, 28, 28]``, ``y_*`` ``int64`` 0..9, 10 classes.

    Raises:
        DatasetError: missing files, a gzip that does not decompress, an IDX file whose size does
            not match its header, image/label counts that differ, a failed download.
    """
    return _load_idx_dataset("MNIST", "mnist", root, download)


@register_dataset("fashion_mnist")
def fashion_mnist(root: Path, download: bool = False) -> DataBundle:
    """Fashion-MNIST (60,000 train + 10,000 test, 28x28 grey, 10 clothing classes), via torchvision.

    Source: Xiao et al. 2017 (Zalando), the original IDX files under ``root/FashionMNIST/raw/``.

    Args:
        root: folder holding ``FashionMNIST/raw/``.
        download: let torchvision download missing files (needs internet).

    Returns:
        ``x_*`` ``uint8 [N, 1, 28, 28]``, ``y_*`` ``int64`` 0..9, class names from torchvision
        (``"T-shirt/top"``, ``"Trouser"``, ...).

    Raises:
        DatasetError: as for :func:`mnist`.
    """
    return _load_idx_dataset("FashionMNIST", "fashion_mnist", root, download)


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------
def _cifar_from_batches(root: Path, download: bool) -> DataBundle:
    import torchvision.datasets as tvd

    folder = root / tvd.CIFAR10.base_folder
    try:
        train = tvd.CIFAR10(str(root), train=True, download=download)
        test = tvd.CIFAR10(str(root), train=False, download=download)
    except Exception as exc:  # RuntimeError (md5 / missing), URLError, pickle errors
        raise DatasetError(
            f"torchvision.datasets.CIFAR10 could not read {str(folder)!r} ({type(exc).__name__}: "
            f"{str(exc).strip()[:300]}). torchvision checks the md5 of every batch file: restore "
            "the official cifar-10-python.tar.gz contents, or remove that folder and use the "
            "image-folder layout root/cifar10/{train,test}/<class>/*.jpg") from None
    classes = list(train.classes)
    return DataBundle(
        name="cifar10",
        x_train=np.ascontiguousarray(train.data.transpose(0, 3, 1, 2)),
        y_train=np.asarray(train.targets, dtype=np.int64),
        x_test=np.ascontiguousarray(test.data.transpose(0, 3, 1, 2)),
        y_test=np.asarray(test.targets, dtype=np.int64),
        num_classes=len(classes), class_names=classes,
        meta={"source": str(folder), "reader": "torchvision.datasets.CIFAR10"},
    )


def scan_image_folder(split_dir: Path) -> tuple[list[str], list[str], np.ndarray,
                                                list[tuple[str, int, int]]]:
    """List an ImageFolder split: ``split_dir/<class>/<image>``.

    Args:
        split_dir: e.g. ``root/cifar10/train``.

    Returns:
        ``(classes, files, labels, fingerprint)``: class folder names sorted (class index =
        position, as ``torchvision.datasets.ImageFolder``), the image files class by class in
        sorted name order, their ``int64`` labels, and ``(path relative to split_dir's parent,
        size, mtime_ns)`` of each file (the cache key).

    Raises:
        DatasetError: missing folder, no class folders, or a class folder without images.
    """
    if not split_dir.is_dir():
        raise DatasetError(f"image folder {str(split_dir)!r} does not exist; expected "
                           f"{split_dir.name}/<class>/*.jpg beside it: {_FIX}")
    with os.scandir(split_dir) as it:
        classes = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError(f"image folder {str(split_dir)!r} has no class folders; expected "
                           f"{split_dir}/<class>/*.jpg: {_FIX}")
    files: list[str] = []
    labels: list[int] = []
    fingerprint: list[tuple[str, int, int]] = []
    cut = len(os.path.join(str(split_dir.parent), ""))
    for k, cls in enumerate(classes):
        found = scan_image_files(split_dir / cls)
        if not found:
            raise DatasetError(f"class folder {str(split_dir / cls)!r} holds no .jpg/.jpeg/.png "
                               f"images; add them or remove the folder: {_FIX}")
        files += [path for path, _, _ in found]
        fingerprint += [(path[cut:], size, mtime) for path, size, mtime in found]
        labels += [k] * len(found)
    return classes, files, np.asarray(labels, dtype=np.int64), fingerprint


def _cifar_from_image_folder(root: Path, base: Path, cache: bool) -> DataBundle:
    splits = {s: scan_image_folder(base / s) for s in ("train", "test")}
    classes = splits["train"][0]
    if splits["test"][0] != classes:
        raise DatasetError(
            f"class folders differ between {str(base / 'train')!r} ({', '.join(classes)}) and "
            f"{str(base / 'test')!r} ({', '.join(splits['test'][0])}); both splits need the same "
            "classes")
    fingerprint = splits["train"][3] + splits["test"][3]

    def build() -> dict[str, np.ndarray]:
        return {f"x_{s}": decode_image_files(splits[s][1], what="CIFAR-10 image")
                for s in ("train", "test")}

    arrays, info = cached_arrays(root, "cifar10", {"layout": "image_folder"}, fingerprint, build,
                                 required=("x_train", "x_test"), enabled=cache)
    for s in ("train", "test"):
        if len(arrays[f"x_{s}"]) != len(splits[s][2]):  # defensive: a stale or foreign entry
            raise DatasetError(f"dataset cache {info['cache_file']!r} does not match the files; "
                               "delete the .sweeplab-cache folder")
    return DataBundle(
        name="cifar10", x_train=arrays["x_train"], y_train=splits["train"][2],
        x_test=arrays["x_test"], y_test=splits["test"][2], num_classes=len(classes),
        class_names=classes,
        meta={"source": str(base), "reader": "image_folder", **info},
    )


@register_dataset("cifar10")
def cifar10(root: Path, download: bool = False, cache: bool = True) -> DataBundle:
    """CIFAR-10 (50,000 train + 10,000 test, 32x32 RGB, 10 classes).

    Source: Krizhevsky 2009. Reads ``root/cifar-10-batches-py`` with
    ``torchvision.datasets.CIFAR10`` when present, else the image-folder tree
    ``root/cifar10/{train,test}/<class>/*.jpg`` (or ``root/{train,test}/...`` when ``root`` is
    the ``cifar10`` folder); the decoded image-folder arrays are cached under
    ``root/.sweeplab-cache`` (first load about 3-5 s on one core, cached about 0.2 s).

    Args:
        root: the data root.
        download: let torchvision download the pickled batches when neither layout is present.
        cache: use and write the decoded-array cache (image-folder layout only).

    Returns:
        ``x_*`` ``uint8 [N, 3, H, W]`` (32x32 for CIFAR-10), ``y_*`` ``int64``; class names are
        the class folder names (or torchvision's for the batches).

    Raises:
        DatasetError: no CIFAR-10 under ``root``, a missing split or class folder, class folders
            that differ between splits, a JPEG that does not decode, images of different sizes,
            batches that fail torchvision's md5 check.
    """
    if (root / "cifar-10-batches-py").is_dir():
        return _cifar_from_batches(root, download)
    for base in (root / "cifar10", root):
        if (base / "train").is_dir() or (base / "test").is_dir():
            return _cifar_from_image_folder(root, base, cache)
    if download:
        return _cifar_from_batches(root, download)
    raise DatasetError(
        f"no CIFAR-10 under data.root {str(root)!r}: expected {str(root / 'cifar10')}/"
        "{train,test}/<class>/*.jpg (image folder) or "
        f"{str(root / 'cifar-10-batches-py')} (torchvision); {_FIX}")
