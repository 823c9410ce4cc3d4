"""TensorBoard output that reads like a training run: clean scalar tags, runs named by their
hyperparameters, a complete HPARAMS tab.

Ray Tune's default ``TBXLoggerCallback`` writes every key of every result under ``ray/tune/``,
Ray's bookkeeping included (``done``, ``iterations_since_restore``, ``pid``, ``hostname`` ...),
and its HPARAMS tab lists ``training_iteration`` as a metric it never writes as a scalar (an
empty column). :class:`TrialTensorBoard` replaces it (the runner turns Ray's automatic loggers
off with ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`` and passes Ray's CSV and JSON loggers itself,
which the results package and ``resume`` read):

* **Tags.** Only declared metrics (the family's plus the loop's
  :data:`~sweeplab.metrics.convention.LOOP_METRICS`) are written, at step
  ``training_iteration``, under one mapping (:func:`scalar_tag`): a metric in seconds ->
  ``time/{name}`` (``time/iteration_seconds``, ``time/train_seconds``), ``{split}_{quantity}``
  -> ``{split}/{quantity}`` (``train/loss``, ``val/accuracy``, ``test/nmi``), any other run
  quantity -> ``run/{name}`` (``run/num_params``, ``run/current_lr``, ``run/diverged``).
* **Runs.** One folder per trial, Ray's trial folder, named by :class:`TrialDirName`:
  ``trial_<id> lr=3e-3,norm=batch`` (the values that vary in the search), so TensorBoard's run
  filter selects by hyperparameter; the trial's image grids (:mod:`sweeplab.kit.media`) are
  written into the same folder, so images and scalars are one run.
* **HPARAMS.** Each run gets a session start (its hyperparameters, ``seed`` included) with its
  first result and a session end (success, or failure for an errored trial) when it ends; no
  experiment summary is written, so TensorBoard derives the metric columns from the scalar tags
  the runs hold, and every column has values.
"""
from __future__ import annotations

import logging
import math
import re
import time
from typing import Any, Iterable, Mapping

from ray.tune.logger import LoggerCallback

from sweeplab.metrics.convention import Metric

logger = logging.getLogger(__name__)

#: Longest ``key=value,...`` part of a run (trial folder) name; longer ones are cut.
MAX_VALUES_CHARS = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


def scalar_tag(metric: Metric) -> str:
    """The TensorBoard tag of a declared metric: ``time/{name}`` for one in seconds, the loop's
    timing (``train_seconds`` -> ``time/train_seconds``, not a ``train`` split's ``seconds``),
    ``{split}/{quantity}`` for a per-split metric (``val_accuracy`` -> ``val/accuracy``), else
    ``run/{name}`` (``num_params`` -> ``run/num_params``)."""
    if metric.unit == "seconds":
        return f"time/{metric.name}"
    if metric.split:
        return f"{metric.split}/{metric.quantity}"
    return f"run/{metric.name}"


def short_value(value: Any) -> str:
    """A hyperparameter value as it appears in a run name: floats with 3 significant digits,
    very small or large ones as ``3e-3`` / ``1.5e+5`` (no zero-padded exponent), the rest as text."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        if abs(value) < 1e-2 or abs(value) >= 1e5:
            mantissa, exp = f"{value:.2e}".split("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            return f"{mantissa}e{exp[0] if exp[0] == '-' else '+'}{int(exp[1:])}"
        return f"{value:.3g}"
    return str(value)


def run_name(trial_id: str, config: Mapping[str, Any], varied: Iterable[str]) -> str:
    """``trial_<id> k1=v1,k2=v2``: the trial id, then the varied hyperparameters' values (in
    ``varied``'s order, :func:`short_value`), filesystem-safe (only letters, digits and
    ``._=,+-``; no ``/``) and at most :data:`MAX_VALUES_CHARS` characters after the id.

    Args:
        trial_id: Ray's trial id.
        config: the trial's config as Ray Tune hands it over; a key missing from it is skipped,
            and ``seed`` counts Ray's ``__trial_index__`` (a sampled configuration's repeat) in
            as the loop does.
        varied: the keys to show.
    """
    parts = []
    for key in varied:
        if key == "seed" and "seed" in config:
            value: Any = int(config["seed"]) + int(config.get("__trial_index__", 0) or 0)
        elif config.get(key) is not None:  # a conditional parameter may be absent or None
            value = config[key]
        else:
            continue
        parts.append(f"{key}={_UNSAFE.sub('-', short_value(value))}")
    values = ",".join(parts)[:MAX_VALUES_CHARS]
    return f"trial_{trial_id} {values}" if values else f"trial_{trial_id}"


class TrialDirName:
    """Ray Tune's ``trial_dirname_creator``: each trial's folder (and TensorBoard run) is
    :func:`run_name` of its id, config and the sweep's ``varied`` keys.

    Args:
        varied: the hyperparameters that vary (search space keys, grid variants' keys,
            ``variant``, ``seed`` with repeats).
    """

    def __init__(self, varied: Iterable[str]) -> None:
        self.varied = list(varied)

    def __call__(self, trial: Any) -> str:
        """The folder name of ``trial`` (a Ray ``Trial``)."""
        return run_name(trial.trial_id, trial.config, self.varied)


class TrialTensorBoard(LoggerCallback):
    """Ray Tune logger callback writing each trial's declared metrics and HPARAMS session into
    its trial folder (see the module docstring for tags and names).

    Args:
        metrics: the metrics to write (the family's declared ones and the loop's); other
            result keys (Ray's bookkeeping, ``seed``, ``node`` ...) are never written.
        param_names: the hyperparameters shown in HPARAMS (search space keys and variants'
            keys); ``variant`` and ``seed`` are added when the trial has them.
    """

    def __init__(self, metrics: Iterable[Metric], param_names: Iterable[str]) -> None:
        self.tags = {m.name: scalar_tag(m) for m in metrics}
        self.param_names = list(param_names)
        self._writers: dict[Any, Any] = {}
        self._started: set[Any] = set()

    def log_trial_start(self, trial: Any) -> None:
        """Open the trial's event file in its (driver-side) trial folder; Ray syncs it to storage."""
        from tensorboardX import SummaryWriter

        if trial in self._writers:
            self._writers[trial].close()
        trial.init_local_path()
        self._writers[trial] = SummaryWriter(trial.local_path, flush_secs=30)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        """Write the declared metrics of one result at step ``training_iteration``; with the
        trial's first result, its HPARAMS session start."""
        if trial not in self._writers:
            self.log_trial_start(trial)
        writer = self._writers[trial]
        step = int(result.get("training_iteration") or iteration)
        for name, tag in self.tags.items():
            value = result.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                writer.add_scalar(tag, float(value), global_step=step)
        if trial not in self._started:
            self._started.add(trial)
            self._write_summary(writer, self._session_start(trial, result))
        writer.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """Write the HPARAMS session end (failure for an errored trial) and close the event file."""
        writer = self._writers.pop(trial, None)
        if writer is None:
            return
        if trial in self._started:
            self._write_summary(writer, _session_end(failed))
        writer.close()

    def _session_start(self, trial: Any, result: Mapping[str, Any]):
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        params = {}
        for name in self.param_names + ["variant"]:
            if trial.config.get(name) is not None:
                params[name] = _hparam_value(trial.config[name])
        if "seed" in result:
            params["seed"] = int(result["seed"])
        return hparams_pb(params, trial_id=run_name(trial.trial_id, trial.config, self.param_names))

    @staticmethod
    def _write_summary(writer: Any, summary: Any) -> None:
        """Add a TensorBoard ``Summary`` proto (tensorboard's own) to a tensorboardX writer."""
        from tensorboardX.proto.summary_pb2 import Summary

        try:
            writer.file_writer.add_summary(Summary.FromString(summary.SerializeToString()))
        except Exception:  # noqa: BLE001 - never lose the sweep over a summary
            logger.exception("could not write an hparams summary")


def _session_end(failed: bool):
    """The HPARAMS session-end summary: status failure or success, ended now."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS,
                                          end_time_secs=time.time())
    summary = Summary()
    summary.value.add(tag=metadata.SESSION_END_INFO_TAG, tensor=metadata.NULL_TENSOR,
                      metadata=metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(
                          session_end_info=info)))
    return summary


def _hparam_value(value: Any) -> Any:
    """TensorBoard takes numbers, strings and booleans; anything else is shown as text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def sweep_loggers(spec: Any) -> list[Any]:
    """The logger callbacks of a sweep: Ray's CSV and JSON loggers (``progress.csv`` and
    ``result.json``: tables, curves and resume read them) and :class:`TrialTensorBoard`.
    Ray's automatic loggers must be off (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``) or Ray adds
    its own TensorBoard logger beside this one.

    Args:
        spec: the sweep's :class:`~sweeplab.spec.JobSpec`.
    """
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sweeplab.metrics.convention import LOOP_METRICS

    metrics = {**spec.family().metric_table(), **{m.name: m for m in LOOP_METRICS}}
    return [CSVLoggerCallback(), JsonLoggerCallback(), TrialTensorBoard(metrics.values(), varied_keys(spec))]


def varied_keys(spec: Any) -> list[str]:
    """The hyperparameters that vary between a sweep's trials, in the order run names show
    them: ``variant`` (grid variants), the search space's keys, the variants' keys, ``seed``
    (with ``repeats`` > 1)."""
    variant_keys = sorted({k for v in spec.search.variants for k in v if k != "name"})
    keys = (["variant"] if spec.search.variants else []) + list(spec.search.space)
    keys += [k for k in variant_keys if k not in keys]
    return keys + (["seed"] if spec.repeats > 1 and "seed" not in keys else [])


def run_name_keys(spec: Any) -> list[str]:
    """The keys a trial's folder and run name show: :func:`varied_keys` without the grid
    variants' own keys, which the variant's name already stands for (``variant=b64_20_20_20``
    rather than every batch size and epoch count it sets); HPARAMS keeps them all."""
    variant_keys = {k for v in spec.search.variants for k in v if k != "name"} - set(spec.search.space)
    return [k for k in varied_keys(spec) if k not in variant_keys]


# a sweep started before this module changed names its logger in its saved tuner.pkl
HParamsLoggerCallback = TrialTensorBoard
