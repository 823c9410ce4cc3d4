"""``kul_regression``: the course's personal regression problem (KU Leuven ANN & DL, §1.4).

Source: ``../shared/specs/ann_course.md`` §1 (b) and ``../shared/data/README.md``. The file
``kul_regression/Data_Problem1_regression.mat`` holds inputs X1, X2 and five nonlinear targets
T1..T5 at 13,600 points; a student's own target is

    T_new = (d1 T1 + d2 T2 + d3 T3 + d4 T4 + d5 T5) / (d1 + d2 + d3 + d4 + d5)

with d1 >= ... >= d5 the five largest digits of the student number. The report's digits are
unknown, so ``digits`` is a required option and its numbers cannot be reproduced exactly. The
split is not stated either: the spec's proposal, three disjoint random draws of 1,000 points for
train, validation and test, is the default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sweeplab.datasets.base import DataBundle, DatasetError, register_dataset

#: The file under ``root`` (``root/kul_regression/`` or ``root`` itself).
MAT_FILE = "Data_Problem1_regression.mat"
_KEYS = ("X1", "X2", "T1", "T2", "T3", "T4", "T5")


def parse_digits(digits: Any) -> list[int]:
    """Five digits from ``"98765"``, ``98765`` or ``[9, 8, 7, 6, 5]``, sorted largest first
    (the course's rule: d1 >= ... >= d5, so the order given does not matter).

    Raises:
        DatasetError: not exactly five digits 0..9, or all zero.
    """
    text = str(digits) if isinstance(digits, (str, int)) and not isinstance(digits, bool) else None
    values = [int(c) for c in text] if text is not None and text.isdigit() else digits
    ok = isinstance(values, (list, tuple)) and len(values) == 5 and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 9 for d in values)
    if not ok or sum(values) == 0:
        raise DatasetError(f"data.options.digits={digits!r} for 'kul_regression' must be five digits 0..9, "
                           "not all zero: the five largest digits of a student number, e.g. '98765'")
    return sorted(values, reverse=True)


def _find(root: Path) -> Path:
    for path in (root / "kul_regression" / MAT_FILE, root / MAT_FILE):
        if path.is_file():
            return path
    raise DatasetError(f"{root / 'kul_regression' / MAT_FILE} not found; run shared/data/materialize.sh DEST "
                       "and point data.root at DEST")


def _read(path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as exc:  # noqa: BLE001 - scipy raises several kinds for a broken file
        raise DatasetError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc}); "
                           "re-run shared/data/materialize.sh") from None
    missing = [k for k in _KEYS if k not in mat]
    if missing:
        raise DatasetError(f"{path}: variables {missing} missing (expected {', '.join(_KEYS)})")
    arrays = {k: np.asarray(mat[k], dtype=np.float64).reshape(-1) for k in _KEYS}
    if len({len(a) for a in arrays.values()}) != 1:
        raise DatasetError(f"{path}: X1, X2, T1..T5 must have one value per point; lengths "
                           f"{ {k: len(a) for k, a in arrays.items()} }")
    return arrays


@register_dataset("kul_regression")
def kul_regression(root: Path, download: bool = False, *, digits: Any = None, n_train: int = 1000,
                   n_val: int = 1000, n_test: int = 1000, split_seed: int = 0) -> DataBundle:
    """The personal regression problem: inputs (X1, X2), target T_new from five digits.

    Args:
        root: the folder ``shared/data/materialize.sh`` filled (holding ``kul_regression/``).
        download: ignored (the file is never downloaded).
        digits: required: the five largest digits of a student number (``"98765"`` or a list).
        n_train, n_val, n_test: sizes of three disjoint random draws from the 13,600 points.
        split_seed: seed of the draws (the same split for every trial).

    Returns:
        A ``regression`` bundle: ``x`` ``float32 [N, 2]`` (X1, X2), ``y`` ``float32 [N]``
        (T_new, raw scale), with a validation split; ``meta`` holds ``digits``, ``weights``
        (d_i / sum d) and the file.

    Raises:
        DatasetError: missing or unreadable file, missing digits, sizes that do not fit.
    """
    weights = np.asarray(parse_digits(digits), dtype=np.float64)
    path = _find(root)
    arrays = _read(path)
    n = len(arrays["X1"])
    sizes = (n_train, n_val, n_test)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes) or sum(sizes) > n:
        raise DatasetError(f"data.options n_train={n_train}, n_val={n_val}, n_test={n_test} for 'kul_regression' "
                           f"must be whole numbers >= 1 summing to at most the {n} points")
    x = np.stack([arrays["X1"], arrays["X2"]], axis=1).astype(np.float32)
    targets = np.stack([arrays[f"T{i}"] for i in range(1, 6)], axis=1)
    y = (targets @ weights / weights.sum()).astype(np.float32)
    order = np.random.default_rng(split_seed).permutation(n)
    tr, va, te = np.split(order[:sum(sizes)], [n_train, n_train + n_val])
    return DataBundle(name="kul_regression", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te],
                      x_val=x[va], y_val=y[va], task="regression",
                      meta={"digits": [int(d) for d in weights], "weights": (weights / weights.sum()).tolist(),
                            "source": str(path), "n_points": n, "split_seed": split_seed})
