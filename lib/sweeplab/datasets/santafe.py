"""``santafe``: the Santa Fe laser series (competition A, Weigend & Gershenfeld 1993).

Source: ``../shared/specs/ann_course.md`` §2 and ``../shared/data/README.md``:
``santafe/lasertrain.dat`` (the 1,000 values the competition gave out) and ``laserpred.dat``
(the 100 values that followed, the competition's test), ASCII, one value a line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeplab.datasets.base import DataBundle, DatasetError, register_dataset

TRAIN_FILE, TEST_FILE = "lasertrain.dat", "laserpred.dat"


def read_series(path: Path) -> np.ndarray:
    """A series of one number a line as ``float32 [T, 1]``.

    Raises:
        DatasetError: a missing file, a line that is not a number, fewer than two values.
    """
    if not path.is_file():
        raise DatasetError(f"{path} not found; run shared/data/materialize.sh DEST and point data.root at DEST")
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise DatasetError(f"{path}: not one number a line ({exc})") from None
    if values.ndim != 1 or len(values) < 2 or not np.isfinite(values).all():
        raise DatasetError(f"{path}: needs at least two finite values, one a line")
    return values.astype(np.float32)[:, None]


@register_dataset("santafe")
def santafe(root: Path, download: bool = False) -> DataBundle:
    """The Santa Fe laser series: 1,000 training values and their 100-value continuation.

    Args:
        root: the folder holding ``santafe/`` (or the ``santafe`` folder itself).
        download: ignored (the files are never downloaded).

    Returns:
        A ``series`` bundle: ``x_train`` ``float32 [1000, 1]``, ``x_test`` ``float32 [100, 1]``
        (the continuation, in time order); ``meta`` holds the files and the training mean and
        population standard deviation.

    Raises:
        DatasetError: a missing or unreadable file.
    """
    base = root / "santafe" if (root / "santafe").is_dir() else root
    train, test = read_series(base / TRAIN_FILE), read_series(base / TEST_FILE)
    return DataBundle(name="santafe", x_train=train, y_train=None, x_test=test, y_test=None, task="series",
                      meta={"source": str(base), "train_mean": float(train.mean()),
                            "train_std": float(train.std()), "test_variance": float(test.var())})
