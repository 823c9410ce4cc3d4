"""Ray Tune searchers of our own (the Optuna ones come from ``ray.tune.search.optuna``)."""
from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher


class PointsSearcher(Searcher):
    """Runs a fixed list of configurations in order: grids, named variants and their repeats.

    Its position is checkpointed with the experiment, so a resumed sweep never proposes a
    configuration twice. (Ray's ``BasicVariantGenerator(points_to_evaluate=...)`` cannot serve:
    it rejects keys absent from ``param_space``, such as a variant's own hyperparameters.)

    Args:
        points: the configurations, each a dict of hyperparameters (a repeat's ``seed`` among
            them, plus the ``variant`` bookkeeping key).
    """

    def __init__(self, points: list[dict[str, Any]]) -> None:
        super().__init__()
        self.points = [dict(p) for p in points]
        self.position = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """Take the sweep's metric and mode (Ray Tune's Searcher interface); always accepts."""
        self._metric, self._mode = metric, mode
        return True

    def suggest(self, trial_id: str):
        """The next grid point as a config dict, or ``Searcher.FINISHED`` when all were proposed."""
        if self.position >= len(self.points):
            return Searcher.FINISHED
        self.position += 1
        return dict(self.points[self.position - 1])

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        """Nothing to learn from results: a grid proposes the same points whatever they score."""

    def save(self, checkpoint_path: str) -> None:
        """Pickle the points and how many were proposed to ``checkpoint_path`` (for ``sweeplab resume``)."""
        with open(checkpoint_path, "wb") as fh:
            pickle.dump({"points": self.points, "position": self.position}, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Load what :meth:`save` wrote, so a resumed sweep proposes only the points not yet run."""
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        self.points, self.position = state["points"], state["position"]
