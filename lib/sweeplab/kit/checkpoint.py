"""Checkpoints of a family's state: written atomically, read back as tensors and plain data only."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sweeplab.kit.family import ModelFamily

#: Name of the state file inside every checkpoint directory.
STATE_FILE = "state.pt"


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path`` and rename: never a half-written file.

    If saving fails part-way, the temporary file is removed and ``path`` keeps its old content.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint_dir(directory: Path, family: ModelFamily, iteration: int,
                        train_seconds: float = 0.0) -> None:
    """Write the family's state after ``iteration`` (1-based count of finished iterations)
    and the cumulative training seconds so far."""
    state = {
        "iteration": iteration,
        "train_seconds": float(train_seconds),
        "family": family.state_dict(),
        "generator": family.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    _atomic_save(state, directory / STATE_FILE)


def load_checkpoint_dir(directory: Path, family: ModelFamily) -> tuple[int, float]:
    """Restore a family from a checkpoint directory.

    Returns:
        ``(finished iterations, cumulative training seconds)``.

    Uses ``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain data only,
    never code.

    Raises:
        CheckpointError: the file holds pickled objects other than tensors and plain data
            (nothing in it is executed), or it is not a checkpoint at all.
    """
    path = directory / STATE_FILE
    try:
        state = torch.load(path, map_location=family.device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused to load: a checkpoint may hold only tensors and plain data "
                              f"(torch.load weights_only=True): {first}") from None
    family.load_state_dict(state["family"])
    family.generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    return int(state["iteration"]), float(state.get("train_seconds", 0.0))


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be loaded safely (unsafe pickled objects, truncated, not torch)."""
