"""``none``: no data, for families that compute their objective without any (``analytic``).

Every job names a dataset and the runner reads it once; a family that needs none (an analytic
test function) names this one. It holds a single placeholder sample in each split (train,
validation, test) so the bundle is a valid ``unlabelled`` :class:`~sweeplab.datasets.base.DataBundle`
on which a ``val_*`` objective passes the runner's validation-split check; families that train on
data refuse it through their ``data_tasks`` or shape checks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeplab.datasets.base import DataBundle, register_dataset


@register_dataset("none", needs_root=False)
def no_data(root: Path | None = None, download: bool = False) -> DataBundle:
    """No data: one placeholder sample ``float32 [1, 1]`` of 0 in train, validation and test
    (``unlabelled``).

    Args:
        root, download: ignored (nothing is read).
    """
    placeholder = np.zeros((1, 1), dtype=np.float32)
    return DataBundle("none", placeholder, None, placeholder.copy(), None, x_val=placeholder.copy(),
                      task="unlabelled",
                      meta={"placeholder": "no data: the family computes its objective itself"})
