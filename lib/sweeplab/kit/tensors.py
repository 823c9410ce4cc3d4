"""The tensor batch path families share: index batches over in-memory arrays, no DataLoader."""
from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np
import torch


def to_float_images(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """``uint8`` images ``[B, C, H, W]`` (0..255) -> ``float32`` on ``device`` in [0, 1];
    float input is moved and cast to ``float32`` unchanged."""
    t = torch.as_tensor(x)
    t = t.to(device, non_blocking=True)
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


def shared_tensor(x: np.ndarray) -> torch.Tensor:
    """Wrap a (possibly read-only, object-store backed) array as a tensor without copying.
    The tensor must not be written to."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(x)


def batches(n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
            drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples.

    Args:
        n: number of samples.
        batch_size: samples per batch.
        shuffle: draw a fresh permutation from ``generator``.
        generator: torch RNG (its state is checkpointed, so resumed epochs see the same order).
        drop_last: skip a final short batch.

    Yields:
        ``int64`` index tensors of shape ``[batch_size]`` (the last may be shorter).
    """
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - (n % batch_size) if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]
