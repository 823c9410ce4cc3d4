"""scikit-learn's 8x8 handwritten digits: the quickstart dataset (ships with scikit-learn)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeplab.datasets.base import DataBundle, DatasetError, register_dataset


@register_dataset("digits", needs_root=False)
def digits(root: Path | None = None, download: bool = False, test_size: float = 0.2,
           seed: int = 0) -> DataBundle:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), no files needed.

    Source: ``sklearn.datasets.load_digits`` (the UCI optical recognition of handwritten digits
    test set). Pixel values 0..16 are scaled to 0..255 (``round(v * 255 / 16)``).

    Args:
        root: ignored (the data ship with scikit-learn).
        download: ignored.
        test_size: share of the images in the test split, in ``(0, 1)``; default 0.2.
        seed: seed of the stratified train/test split (fixed, so every run sees the same split).

    Returns:
        A bundle with ``x_train`` ``uint8 [N_train, 1, 8, 8]`` (N_train = 1437 at the default),
        ``x_test`` ``uint8 [N_test, 1, 8, 8]`` (360), ``int64`` labels 0..9, 10 classes.

    Raises:
        DatasetError: if ``test_size`` is not in ``(0, 1)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if (isinstance(test_size, bool) or not isinstance(test_size, (int, float))
            or not 0 < test_size < 1):
        raise DatasetError(f"data.options.test_size={test_size!r} for 'digits' must be a "
                           "fraction strictly between 0 and 1, e.g. 0.2")
    raw = load_digits()
    images = np.rint(raw.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    labels = raw.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=seed)
    return DataBundle(
        name="digits", x_train=np.ascontiguousarray(x_train), y_train=y_train,
        x_test=np.ascontiguousarray(x_test), y_test=y_test, num_classes=10,
        class_names=[str(d) for d in range(10)],
        meta={"source": "sklearn.datasets.load_digits", "pixel_levels": 17,
              "test_size": test_size, "split_seed": seed},
    )
