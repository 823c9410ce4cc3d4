"""CelebA faces with one binary attribute as the label, from the standard CelebA layout.

Reads only three things under ``root/celeba/`` (or ``root`` itself when it is the celeba folder):
``img_align_celeba/*.jpg``, ``list_attr_celeba.txt`` and ``list_eval_partition.txt``; the other
CelebA files (landmarks, identities, boxes) are not needed. torchvision's ``CelebA`` class is not
used because it checks the md5 of all the original files, which a subset cannot match.

Images are resized and centre-cropped as ``transforms.Resize(image_size)`` +
``CenterCrop(image_size)`` and cached under ``root/.sweeplab-cache`` (the cache does not depend
on the attribute, so sweeping over attributes decodes the images once).
"""
from __future__ import annotations

import difflib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from sweeplab.datasets._cache import cached_arrays, source_fingerprint
from sweeplab.datasets._images import decode_image_files
from sweeplab.datasets.base import DataBundle, DatasetError, register_dataset

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"
#: Partition codes of ``list_eval_partition.txt``.
PARTITIONS = {0: "train", 1: "valid", 2: "test"}

_FIX = "re-run shared/data/materialize.sh DEST and point data.root at DEST"


def find_celeba_dir(root: Path) -> Path:
    """The CelebA folder: ``root/celeba`` if it exists, else ``root`` if it holds the CelebA files.

    Raises:
        DatasetError: if neither holds ``img_align_celeba/`` or the list files.
    """
    markers = (IMAGE_DIR, ATTR_FILE, PARTITION_FILE)
    for cand in (root / "celeba", root):
        if any((cand / m).exists() for m in markers):
            return cand
    raise DatasetError(
        f"no CelebA under data.root {str(root)!r}: expected {str(root / 'celeba')}/ holding "
        f"{IMAGE_DIR}/*.jpg, {ATTR_FILE} and {PARTITION_FILE}; {_FIX}")


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"CelebA file {str(path)!r} is missing; {_FIX}")
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read CelebA file {str(path)!r} ({exc}); {_FIX}") from None


def read_attributes(path: Path) -> tuple[list[str], dict[str, int], np.ndarray]:
    """Parse ``list_attr_celeba.txt``.

    Format: line 1 the image count, line 2 the attribute names, then one line per image:
    ``filename v_1 .. v_A`` with values ``-1`` or ``1``.

    Returns:
        ``(names, row_of, values)``: the A attribute names, filename -> row index, and the
        ``int8`` matrix ``[N, A]`` of -1/1 values.

    Raises:
        DatasetError: a missing file, a count that does not match the lines (truncated file), a
            line with the wrong number of values or a value other than -1/1 (names the line).
    """
    lines = _lines(path)
    if len(lines) < 2:
        raise DatasetError(f"{str(path)!r} is truncated: it needs a count line and an attribute "
                           f"name line; {_FIX}")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DatasetError(f"{str(path)!r} line 1 should be the image count, found "
                           f"{lines[0][:50]!r}; {_FIX}") from None
    names = lines[1].split()
    rows = [ln for ln in lines[2:] if ln.strip()]
    if len(rows) != count:
        raise DatasetError(f"{str(path)!r} announces {count} images on line 1 but lists "
                           f"{len(rows)}: the file is truncated or corrupt; {_FIX}")
    fast = _parse_attribute_rows_fast(rows, len(names))
    if fast is not None:
        files, values = fast
    else:  # something is wrong: find and name the offending line
        files, values = _parse_attribute_rows_slow(path, rows, len(names))
    return names, {f: i for i, f in enumerate(files)}, values


def _parse_attribute_rows_fast(rows: list[str], n_attr: int) -> tuple[list[str], np.ndarray] | None:
    """pandas' C parser (about 20x faster than Python for 200,000 lines); None if not clean."""
    import pandas as pd

    try:
        df = pd.read_csv(io.StringIO("\n".join(rows)), sep=r"\s+", header=None,
                         dtype={0: str}, engine="c")
    except (ValueError, pd.errors.ParserError):
        return None
    if df.shape != (len(rows), n_attr + 1):
        return None
    vals = df.iloc[:, 1:]
    if not all(pd.api.types.is_integer_dtype(t) for t in vals.dtypes):
        return None
    values = vals.to_numpy()
    if not np.isin(values, (-1, 1)).all():
        return None
    return df[0].tolist(), values.astype(np.int8)


def _parse_attribute_rows_slow(path: Path, rows: list[str],
                               n_attr: int) -> tuple[list[str], np.ndarray]:
    files: list[str] = []
    values = np.empty((len(rows), n_attr), dtype=np.int8)
    for i, ln in enumerate(rows):
        parts = ln.split()
        if len(parts) != n_attr + 1:
            raise DatasetError(f"{str(path)!r} line {i + 3} has {len(parts) - 1} values for "
                               f"{n_attr} attributes; {_FIX}")
        try:
            row = [int(v) for v in parts[1:]]
        except ValueError:
            row = [0]
        if any(v not in (-1, 1) for v in row):
            raise DatasetError(f"{str(path)!r} line {i + 3} holds a value other than -1/1 "
                               f"({ln[:80]!r}); {_FIX}")
        files.append(parts[0])
        values[i] = row
    return files, values


def read_partition(path: Path) -> list[tuple[str, int]]:
    """Parse ``list_eval_partition.txt``: ``filename 0|1|2`` a line (train / valid / test).

    Raises:
        DatasetError: a missing file or a malformed line (names the line).
    """
    out = []
    for i, ln in enumerate(_lines(path)):
        if not ln.strip():
            continue
        parts = ln.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DatasetError(f"{str(path)!r} line {i + 1} should read 'filename 0|1|2', found "
                               f"{ln[:80]!r}; {_FIX}")
        out.append((parts[0], int(parts[1])))
    return out


def _check_options(attribute: object, image_size: object, limit: object) -> None:
    if not isinstance(attribute, str) or not attribute:
        raise DatasetError(f"data.options.attribute={attribute!r} for 'celeba' must be an "
                           "attribute name such as 'Smiling'")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DatasetError(f"data.options.image_size={image_size!r} for 'celeba' must be a "
                           "positive number of pixels (e.g. 64) or null for the original size")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"data.options.limit={limit!r} for 'celeba' must be a positive number "
                           "of images per split, or null for all")


@register_dataset("celeba")
def celeba(root: Path, download: bool = False, attribute: str = "Smiling",
           image_size: int | None = 64, limit: int | None = None, cache: bool = True) -> DataBundle:
    """CelebA aligned faces labelled by one binary attribute (default ``Smiling``).

    Source: Liu et al. 2015, "Deep Learning Face Attributes in the Wild"; layout as distributed
    (``img_align_celeba/``, ``list_attr_celeba.txt``, ``list_eval_partition.txt``). Preprocessing
    as ``shared/specs/derp_vae.md``: resize the shorter side to ``image_size``, centre-crop.

    Args:
        root: the data root holding ``celeba/``, or the celeba folder itself.
        download: let torchvision's ``CelebA`` download the full dataset (Google Drive, needs
            internet) when the files are missing.
        attribute: the attribute used as label (one of the 40 names on line 2 of
            ``list_attr_celeba.txt``); label 1 where the attribute is 1, else 0.
        image_size: output side length in pixels (default 64); ``None`` keeps the original size.
        limit: keep at most this many images of each partition (the first in file order), for
            quick runs; ``None`` keeps all.
        cache: use and write the decoded-array cache under ``root/.sweeplab-cache``.

    Returns:
        ``x_train``/``x_val``/``x_test`` ``uint8 [N, 3, S, S]`` from partitions 0/1/2 (``x_val``
        is None when partition 1 is empty), ``int64`` labels in {0, 1}, ``num_classes=2``,
        class names ``["not <attribute>", "<attribute>"]``.

    Raises:
        DatasetError: no CelebA folder, a missing or malformed list file, an unknown attribute,
            partitioned images missing from the attribute list or the image folder, a JPEG that
            does not decode, an empty train or test partition, a bad option.
    """
    _check_options(attribute, image_size, limit)
    try:
        base = find_celeba_dir(root)
    except DatasetError:
        if not download:
            raise
        base = _download(root)
    names, row_of, values = read_attributes(base / ATTR_FILE)
    col = _attribute_column(base, names, attribute)
    split_files = _split_files(base, read_partition(base / PARTITION_FILE), row_of, limit)
    arrays, info = _decoded_images(root, base, split_files, image_size, limit, cache)
    y = _labels(split_files, row_of, values, col)
    has_val = bool(split_files["valid"])
    return DataBundle(
        name="celeba",
        x_train=arrays["x_train"], y_train=y["train"],
        x_test=arrays["x_test"], y_test=y["test"],
        x_val=arrays["x_valid"] if has_val else None, y_val=y["valid"] if has_val else None,
        num_classes=2, class_names=[f"not {attribute}", attribute],
        meta={"source": str(base), "attribute": attribute, "attribute_index": col,
              "image_size": image_size, "limit": limit,
              "positive_fraction_train": float(y["train"].mean()), **info},
    )


def _decoded_images(root: Path, base: Path, split_files: dict[str, list[str]], image_size: int | None,
                    limit: int | None, cache: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The images of each non-empty partition as ``uint8 [N, 3, S, S]`` arrays (``x_train``,
    ``x_valid``, ``x_test``), read from the cache under ``root`` or decoded (and cached), with
    the cache's info for the bundle's ``meta``."""
    prefix = os.path.join(str(base / IMAGE_DIR), "")
    paths = {s: [prefix + f for f in split_files[s]] for s in PARTITIONS.values()}
    fingerprint = source_fingerprint([p for s in PARTITIONS.values() for p in paths[s]], base)
    fingerprint.append(("splits", *[len(paths[s]) for s in PARTITIONS.values()]))

    def build() -> dict[str, np.ndarray]:
        return {f"x_{s}": decode_image_files(paths[s], size=image_size, what="CelebA image")
                for s in PARTITIONS.values() if paths[s]}

    required = [f"x_{s}" for s in PARTITIONS.values() if paths[s]]
    return cached_arrays(root, "celeba", {"image_size": image_size, "limit": limit},
                         fingerprint, build, required=required, enabled=cache)


def _labels(split_files: dict[str, list[str]], row_of: dict[str, int], values: np.ndarray,
            col: int) -> dict[str, np.ndarray]:
    """``int64`` labels of each partition: 1 where attribute column ``col`` is 1, else 0."""
    labels = {}
    for split in PARTITIONS.values():
        rows = [row_of[f] for f in split_files[split]]
        labels[split] = (values[rows, col] == 1).astype(np.int64)
    return labels


def _attribute_column(base: Path, names: list[str], attribute: str) -> int:
    """Column of ``attribute`` in the attribute list.

    Raises:
        DatasetError: an unknown attribute, with the closest names.
    """
    if attribute not in names:
        close = difflib.get_close_matches(attribute, names, n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise DatasetError(f"data.options.attribute={attribute!r} is not an attribute of "
                           f"{str(base / ATTR_FILE)!r}; {hint}known: {', '.join(names)}")
    return names.index(attribute)


def _split_files(base: Path, partition: list[tuple[str, int]], row_of: dict[str, int],
                 limit: int | None) -> dict[str, list[str]]:
    """Image file names of each partition (at most ``limit`` each, in file order), checked
    against the attribute list and the image folder.

    Raises:
        DatasetError: an empty train or test partition, images without attributes, images missing
            from the image folder.
    """
    split_files: dict[str, list[str]] = {s: [] for s in PARTITIONS.values()}
    for fname, code in partition:
        files = split_files[PARTITIONS[code]]
        if limit is None or len(files) < limit:
            files.append(fname)
    for split in ("train", "test"):
        if not split_files[split]:
            code = {v: k for k, v in PARTITIONS.items()}[split]
            raise DatasetError(f"{str(base / PARTITION_FILE)!r} assigns no image to the {split} "
                               f"partition ({code}); {_FIX}")
    used = [f for s in PARTITIONS.values() for f in split_files[s]]
    no_attr = [f for f in used if f not in row_of]
    if no_attr:
        raise DatasetError(f"{len(no_attr)} images of {str(base / PARTITION_FILE)!r} have no line "
                           f"in {str(base / ATTR_FILE)!r} (first: {no_attr[0]}); the two lists "
                           f"must describe the same images: {_FIX}")
    img_dir = base / IMAGE_DIR
    if not img_dir.is_dir():
        raise DatasetError(f"CelebA image folder {str(img_dir)!r} is missing; {_FIX}")
    present = set(os.listdir(img_dir))
    absent = [f for f in used if f not in present]
    if absent:
        raise DatasetError(f"{len(absent)} images listed in {str(base / PARTITION_FILE)!r} are "
                           f"missing from {str(img_dir)!r} (first: {', '.join(absent[:3])}); "
                           f"restore them, or set data.options.limit to use fewer: {_FIX}")
    return split_files


def _download(root: Path) -> Path:
    import torchvision.datasets as tvd

    try:
        tvd.CelebA(str(root), split="all", target_type="attr", download=True)
    except Exception as exc:  # RuntimeError / URLError / gdown errors
        raise DatasetError(f"download of CelebA into {str(root)!r} failed "
                           f"({type(exc).__name__}: {str(exc).strip()[:300]}); without internet, "
                           f"{_FIX}") from None
    return find_celeba_dir(root)
