"""What a sweep folder says beyond its tables, as methods of
:class:`~sweeplab.results.sweep.Sweep`: hypothesis verdicts, the Pareto front and rule-based
picks, a trial's trained model, and the reproducibility record. Each method is a thin door to
its module (:mod:`~sweeplab.results.verdicts`, :mod:`~sweeplab.results.pareto`,
:mod:`~sweeplab.results.model`, :mod:`sweeplab.runner.record`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    import pandas as pd

    from sweeplab.results.model import LoadedModel
    from sweeplab.spec.hypotheses import HypothesisSpec


class SweepViews:
    """Mixin of :class:`~sweeplab.results.sweep.Sweep` (uses its ``path``, ``spec``,
    ``dataframe`` and ranking)."""

    def verdicts(self, hypotheses: Iterable[HypothesisSpec] | None = None) -> pd.DataFrame:
        """Each hypothesis (default: the job's ``hypotheses:``) judged ``supported``,
        ``refuted`` or ``inconclusive``, with n, means, bootstrap CI, Hedges' g and Holm-adjusted
        p-values (:func:`sweeplab.results.verdicts.verdicts`).

        Raises:
            SweepError: no hypotheses to judge.
        """
        from sweeplab.results import verdicts

        return verdicts.verdicts(self, hypotheses)  # type: ignore[arg-type]

    def pareto_front(self, metrics: Sequence[str] | None = None,
                     modes: Sequence[str] | None = None) -> pd.DataFrame:
        """The completed trials no other trial beats on every objective (default: the job's
        objectives) (:func:`sweeplab.results.pareto.pareto_front`).

        Raises:
            SweepError: fewer than two objectives, or no completed trial with values of them.
        """
        from sweeplab.results import pareto

        return pareto.pareto_front(self, metrics, modes)  # type: ignore[arg-type]

    def pick(self, rule: str) -> pd.Series:
        """The completed trial a rule picks, e.g. ``"min num_params within 0.5% of
        val_accuracy"`` (:func:`sweeplab.results.pareto.pick`).

        Raises:
            SweepError: a malformed rule or no candidate.
        """
        from sweeplab.results import pareto

        return pareto.pick(self, rule)  # type: ignore[arg-type]

    def load_model(self, trial: Any = None, *, checkpoint: str = "best", data_root: str | None = None,
                   device: str = "cpu") -> LoadedModel:
        """A trial's trained model (default: the best trial) from its best kept checkpoint
        (:func:`sweeplab.results.model.load_model`).

        Raises:
            SweepError: no such trial or no checkpoint; SpecError: the data is not here.
        """
        from sweeplab.results import model

        return model.load_model(self, trial, checkpoint=checkpoint, data_root=data_root,  # type: ignore[arg-type]
                                device=device)

    def record(self) -> dict[str, Any] | None:
        """The reproducibility record (:mod:`sweeplab.runner.record`), None for older sweeps."""
        from sweeplab.runner.record import read_record

        return read_record(self.path)  # type: ignore[attr-defined]

    def best_pick_config(self, rule: str) -> dict[str, Any]:
        """The hyperparameters of the trial ``rule`` picks (as :meth:`best_config` gives the best's).

        Raises:
            SweepError: a malformed rule or no candidate.
        """
        row = self.pick(rule)
        config = self.trial_configs()[row["trial_id"]]  # type: ignore[attr-defined]
        config = {k: v for k, v in config.items() if not k.startswith("__") and k != "variant"}
        if row.get("seed") is not None and row.get("seed") == row.get("seed"):
            config["seed"] = int(row["seed"])
        return config
