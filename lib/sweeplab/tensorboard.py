"""TensorBoard output beyond Ray Tune's scalars: the HPARAMS tab.

Ray Tune's ``TBXLoggerCallback`` writes every reported scalar per trial, but its hparams
summary only covers parameters that Ray's own variant generator resolved: trials proposed by a
searcher's ``points_to_evaluate`` (our grids) or run as repeats get none, and it never includes
the seed. :class:`HParamsLoggerCallback` replaces it (Ray then adds no second TensorBoard
logger) and writes, when a trial ends for any reason, the sampled hyperparameters (plus
``variant`` and ``seed``) against the trial's last reported metrics.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable

from ray.tune.logger import TBXLoggerCallback

logger = logging.getLogger(__name__)


class HParamsLoggerCallback(TBXLoggerCallback):
    """Ray Tune's TensorBoard logger plus a complete HPARAMS summary for every trial.

    Args:
        param_names: the hyperparameters to show (the search space's keys); ``variant`` and
            ``seed`` are added when present.
        metric_names: the reported metrics to show against them (the family's metrics).
    """

    def __init__(self, param_names: Iterable[str], metric_names: Iterable[str]) -> None:
        super().__init__()
        self.param_names = list(param_names)
        self.metric_names = list(metric_names)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """Write the trial's hparams summary (its last reported metrics), then close its writer."""
        if trial in self._trial_writer:
            try:
                self._write_hparams(trial)
            except Exception:  # noqa: BLE001 - never lose the sweep over a summary
                logger.exception("could not write the hparams summary of %s", trial)
            self._trial_writer[trial].close()
            del self._trial_writer[trial]
            self._trial_result.pop(trial, None)

    def _write_hparams(self, trial: Any) -> None:
        from tensorboardX.summary import hparams

        last = trial.last_result or {}
        params: dict[str, Any] = {}
        for name in self.param_names + ["variant"]:
            if name in trial.config:
                params[name] = _hparam_value(trial.config[name])
        if "seed" in last:
            params["seed"] = int(last["seed"])
        metrics = {}
        for name in self.metric_names + ["training_iteration", "diverged"]:
            value = last.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics[f"ray/tune/{name}"] = float(value)  # the tag of Ray's scalar curve
        if not params or not metrics:
            return
        exp, start, end = hparams(hparam_dict=params, metric_dict=metrics)
        writer = self._trial_writer[trial].file_writer
        for summary in (exp, start, end):
            writer.add_summary(summary)
        self._trial_writer[trial].flush()


def _hparam_value(value: Any) -> Any:
    """TensorBoard takes numbers, strings and booleans; anything else is shown as text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
