"""The one metric convention every family follows (no torch, no Ray: the spec and the results
package read it without importing a model).

**Names.** A quantity measured on a data split is ``{split}_{quantity}``, with ``split`` one of
``train`` (on the fly during the iteration, training mode), ``val`` and ``test``; the same
quantity has the same name in every family (``loss``, ``accuracy``, ``nmi``, ``elbo``, ``kl``,
``mse``, ``ks_eval`` ...): ``train_loss``, ``val_accuracy``, ``test_nmi``. A quantity of the run
rather than of a split has a bare name: ``num_params``, ``current_lr`` (the learning rate during
the iteration), ``current_beta``, ``step``. Time is always in seconds: the shared loop reports
``iteration_seconds`` (wall clock of one iteration, evaluation included) and ``train_seconds``
(cumulative training time, evaluation excluded) for every family; families do not time
themselves.

**Declaration.** A family declares each metric it reports as a :class:`Metric` (name, mode,
unit, description); the spec checks ``metric:`` against them, the results package uses their
modes, and the contract test checks that a family reports exactly what it declares.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Literal

#: Data splits a metric can be measured on, in the order tables show them.
SPLITS = ("train", "val", "test")
#: Units a metric may declare.
UNITS = {
    "fraction": "a share in [0, 1] (accuracy, active fraction), never percent",
    "nats": "natural-log information per sample (losses, ELBO, KL, cross-entropy)",
    "count": "a whole number of things (parameters, clusters, units, steps)",
    "seconds": "wall-clock seconds",
    "ratio": "a dimensionless ratio or statistic (R², NMI, KS distance, class separation)",
    "squared target units": "mean squared error in the units of the target, squared",
    "target units": "in the units of the target",
    "learning rate": "the optimizer's step size",
    "weight": "a loss weight (β, a schedule's current value)",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Metric:
    """One reported metric.

    Attributes:
        name: the reported key, snake_case, ``{split}_{quantity}`` when measured on a split.
        mode: ``"min"`` or ``"max"``: the direction in which it is better; ``None`` for a value
            that is logged but has no better direction (``current_lr``, ``step``): a job may
            still optimise it, but must then say ``mode:``.
        unit: one of :data:`UNITS`.
        description: one line: what it is and its source.

    Raises:
        ValueError: a name that breaks the convention, an unknown unit or mode.
    """

    name: str
    mode: Literal["min", "max"] | None
    unit: str
    description: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"metric name {self.name!r} must be snake_case ([a-z][a-z0-9_]*)")
        if self.mode not in ("min", "max", None):
            raise ValueError(f"metric {self.name!r}: mode must be 'min', 'max' or None, not {self.mode!r}")
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.name!r}: unit {self.unit!r} is not one of {', '.join(UNITS)}")

    @property
    def split(self) -> str | None:
        """``train``, ``val`` or ``test`` for a per-split metric, else ``None``."""
        head = self.name.split("_", 1)[0]
        return head if head in SPLITS and "_" in self.name else None

    @property
    def quantity(self) -> str:
        """The name without its split (``test_accuracy`` -> ``accuracy``)."""
        return self.name.split("_", 1)[1] if self.split else self.name


def per_split(quantity: str, mode: Literal["min", "max"] | None, unit: str, description: str,
              splits: Iterable[str] = ("val", "test")) -> list[Metric]:
    """The same quantity declared on several splits: ``[val_<q>, test_<q>]`` by default.

    Raises:
        ValueError: a split not in :data:`SPLITS`.
    """
    out = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        out.append(Metric(f"{split}_{quantity}", mode, unit, f"{description} ({split} split)"))
    return out


#: Reported by the shared loop for every family (not declared by families).
LOOP_METRICS: tuple[Metric, ...] = (
    Metric("iteration_seconds", None, "seconds", "wall clock of one iteration, training and evaluation"),
    Metric("train_seconds", "min", "seconds", "cumulative training time of the trial, evaluation excluded"),
    Metric("diverged", None, "count", "1 when the training loss became NaN or infinite (the trial then ended)"),
)


def metric_table(metrics: Iterable[Metric]) -> dict[str, Metric]:
    """``{name: Metric}``, in declaration order.

    Raises:
        ValueError: a name declared twice.
    """
    out: dict[str, Metric] = {}
    for m in metrics:
        if m.name in out:
            raise ValueError(f"metric {m.name!r} is declared twice")
        out[m.name] = m
    return out
