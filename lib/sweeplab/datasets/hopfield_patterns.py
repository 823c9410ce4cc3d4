"""Hand-written ±1 patterns to store in a Hopfield network (``hopfield_patterns``).

Source: ``../shared/specs/ann_course.md`` §3, the course report's §2.1 Q1 and Q2. The digit study
(Q3) reads its patterns from an image dataset instead (``mnist`` or ``digits``: the ``hopfield``
family binarises one prototype per class).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sweeplab.datasets.base import DataBundle, DatasetError, register_dataset

#: The report's pattern sets: Q1 (2 neurons) and Q2 (3 neurons).
PATTERN_SETS: dict[str, list[list[float]]] = {
    "q1": [[1, 1], [-1, -1], [1, -1]],
    "q2": [[1, 1, 1], [-1, -1, -1], [1, -1, 1]],
}


@register_dataset("hopfield_patterns", needs_root=False)
def hopfield_patterns(root: Path | None = None, download: bool = False, patterns: Any = "q1") -> DataBundle:
    """The target patterns of the report's Hopfield questions, or patterns of your own.

    Args:
        root, download: ignored (nothing is read).
        patterns: ``q1`` ([1, 1], [-1, -1], [1, -1]), ``q2`` ([1, 1, 1], [-1, -1, -1], [1, -1, 1]),
            or a list of equally long lists of +1/-1 (``data.options.patterns``).

    Returns:
        A ``classification`` bundle with one sample per pattern: ``x_train = x_test`` ``float32 [Q, N]``
        (entries ±1), ``y = 0..Q-1``, ``num_classes = Q``; the ``hopfield`` family stores each
        class's sample as it is.

    Raises:
        DatasetError: an unknown set name, ragged lists, or entries other than ±1.
    """
    if isinstance(patterns, str):
        if patterns not in PATTERN_SETS:
            raise DatasetError(f"data.options.patterns={patterns!r} for 'hopfield_patterns' must be one of "
                               f"{', '.join(PATTERN_SETS)} or a list of +1/-1 lists, e.g. [[1, 1], [-1, 1]]")
        name, rows = patterns, PATTERN_SETS[patterns]
    else:
        name, rows = "custom", patterns
    try:
        x = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError):
        raise DatasetError("data.options.patterns for 'hopfield_patterns' must be a list of equally long "
                           "lists of +1/-1, e.g. [[1, 1], [-1, 1]]") from None
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1 or not np.isin(x, (-1.0, 1.0)).all():
        raise DatasetError(f"data.options.patterns for 'hopfield_patterns' must be a non-empty list of equally "
                           f"long lists of +1/-1 only; got {rows!r}")
    y = np.arange(len(x), dtype=np.int64)
    return DataBundle(name="hopfield_patterns", x_train=x, y_train=y, x_test=x.copy(), y_test=y.copy(),
                      num_classes=len(x), class_names=[str(r) for r in x.astype(int).tolist()],
                      meta={"pattern_set": name, "source": "../shared/specs/ann_course.md §3"})
