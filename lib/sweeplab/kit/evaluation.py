"""When a family evaluates, and with which random numbers.

Evaluation that draws random numbers (reparameterisation noise, random projections, Monte-Carlo
ELBOs) uses :func:`eval_generator`, seeded by the trial's seed and the training progress: it never
touches the training RNG, and a resumed trial evaluates exactly as an uninterrupted one.
Iterations between evaluations repeat the last evaluated metrics (:class:`EvalCache`).
"""
from __future__ import annotations

from typing import Callable

import torch
from pydantic import BaseModel, Field


class EvalConfig(BaseModel):
    """Evaluation cadence (a mixin for a family's Config)."""

    eval_every: int = Field(1, ge=1, description="evaluate every N iterations (and after the last); "
                                                 "other iterations repeat the last metrics")


def eval_due(iteration: int, every: int, total: int, *, first: bool = False) -> bool:
    """True when 0-based ``iteration`` of ``total`` is an evaluation iteration: every
    ``every``-th, the last, and with ``first`` also iteration 0."""
    done = iteration + 1
    return done % max(1, every) == 0 or done >= total or (first and iteration == 0)


def eval_generator(seed: int, progress: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by ``(seed, progress)`` (progress: the iteration or optimizer step),
    independent of the training RNG, on ``device``."""
    return torch.Generator(device=device).manual_seed(int(seed) * 1_000_003 + int(progress) + 17)


class EvalCache:
    """The last evaluated metrics, repeated on iterations between evaluations.

    Args:
        every: ``eval_every``.
        total: the trial's iterations.
        first: evaluate after iteration 0 too.
    """

    def __init__(self, every: int, total: int, *, first: bool = False) -> None:
        self.every, self.total, self.first = every, total, first
        self.last: dict[str, float] = {}

    def get(self, iteration: int, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        """``compute()`` when ``iteration`` is due (or nothing was evaluated yet), else the last
        values; a copy either way."""
        if not self.last or eval_due(iteration, self.every, self.total, first=self.first):
            self.last = {k: float(v) for k, v in compute().items()}
        return dict(self.last)

    def state_dict(self) -> dict[str, float]:
        """The last metrics (for checkpoints)."""
        return dict(self.last)

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.last = {k: float(v) for k, v in (state or {}).items()}
