"""TensorBoard image grids written from inside a trial, beside Ray Tune's scalar events."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class MediaWriter:
    """Writes a family's :meth:`~sweeplab.kit.family.ModelFamily.media` every ``every``
    iterations (and after the last) into the trial's folder
    (``<experiment_dir>/<trial folder>``, the folder Ray's scalars and HPARAMS go to, named
    ``trial_<id> lr=...`` by :class:`sweeplab.tensorboard.TrialDirName`, so images and scalars
    are one TensorBoard run). Without a local
    experiment folder (cloud storage) it writes in the trial's working directory, which Ray
    uploads (``SyncConfig(sync_artifacts=True)``). The writer opens on first use.

    Args:
        every: iterations between grids (0 = never).
        experiment_dir: the sweep folder when it is a local or shared path, else ``None``.
    """

    def __init__(self, every: int, experiment_dir: str | None) -> None:
        self.every = int(every or 0)
        self.experiment_dir = experiment_dir
        self._writer: Any = None

    def due(self, done: int, total: int) -> bool:
        """True after 1-based iteration ``done`` of ``total`` when grids are due."""
        return bool(self.every) and (done % self.every == 0 or done == total)

    def write(self, images: dict[str, torch.Tensor], step: int) -> None:
        """Log ``tag -> [3, H, W]`` float images (clamped to [0, 1]) at ``step``."""
        if not images:
            return
        if self._writer is None:
            self._writer = self._open()
        for tag, img in images.items():
            self._writer.add_image(tag, img.detach().cpu().clamp(0, 1).numpy(), step)
        self._writer.flush()

    def close(self) -> None:
        """Close the event file (if one was opened)."""
        if self._writer is not None:
            self._writer.close()

    def _open(self):
        from ray import tune
        from tensorboardX import SummaryWriter

        ctx = tune.get_context()
        if self.experiment_dir:
            # the trial's working directory ends in its trial folder's name
            logdir = str(Path(self.experiment_dir) / Path(ctx.get_trial_dir()).name)
        else:
            logdir = ctx.get_trial_dir()
        return SummaryWriter(logdir=logdir, filename_suffix=".media")
