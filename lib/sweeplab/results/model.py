"""The trained model of a trial, back in Python: ``load_sweep(path).load_model()``.

The trial's checkpoints are the folders ``checkpoint_NNNNNN`` in its trial folder; each result
that came with a checkpoint names it (Ray's ``checkpoint_dir_name``), so every kept checkpoint
is matched with the metrics of its iteration. By default the one with the best value of the
job's ``checkpoint.score`` (else its objective) is loaded, which is the best iteration when
the job keeps checkpoints by score, and else the best of those kept (often only the last). The
sweep folder is found by its own path (trial folders by name), so a folder copied to another
machine loads as well; only the data must be there too (``data_root=``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sweeplab.results.sweep import SweepError

if TYPE_CHECKING:
    from sweeplab.results.sweep import Sweep


@dataclasses.dataclass
class LoadedModel:
    """A trial's trained model.

    Attributes:
        family: the :class:`~sweeplab.kit.family.ModelFamily` instance with the checkpoint's
            state (``family.evaluate(iteration - 1)`` recomputes the trial's metrics).
        model: ``family.model`` (a ``torch.nn.Module``) where the family has one, else None.
        config: the trial's hyperparameters (seed included), as its family's Config took them.
        trial_id: the trial.
        iteration: the ``training_iteration`` after which the checkpoint was written.
        metrics: what the trial reported at that iteration.
        checkpoint: the checkpoint folder loaded.
    """

    family: Any
    model: Any
    config: dict[str, Any]
    trial_id: str
    iteration: int
    metrics: dict[str, Any]
    checkpoint: Path


def checkpoints(sweep: Sweep, trial_id: str) -> pd.DataFrame:
    """The kept checkpoints of a trial: one row per checkpoint folder that exists, with the
    trial's reported metrics at its iteration and ``checkpoint`` (the folder's path).

    Raises:
        SweepError: an unknown trial, or a trial without any checkpoint left.
    """
    rows = sweep.dataframe().set_index("trial_id")
    if trial_id not in rows.index:
        raise SweepError(f"{sweep.path}: no trial {trial_id!r}; trials: {', '.join(rows.index)}")
    trial_dir = Path(sweep.path) / Path(str(rows.loc[trial_id, "path"])).name
    hist = sweep.history()
    hist = hist[(hist["trial_id"] == trial_id)]
    if "checkpoint_dir_name" not in hist:
        hist = hist.assign(checkpoint_dir_name=None)
    hist = hist[hist["checkpoint_dir_name"].notna()].copy()
    hist["checkpoint"] = [trial_dir / str(name) for name in hist["checkpoint_dir_name"]]
    hist = hist[[p.is_dir() for p in hist["checkpoint"]]]
    if hist.empty:
        raise SweepError(f"{trial_dir}: no checkpoint left for trial {trial_id} (checkpoint.keep removed them, "
                         "or the trial ended before its first)")
    return hist.drop_duplicates("checkpoint", keep="last").reset_index(drop=True)


def _choose(sweep: Sweep, cps: pd.DataFrame, which: str) -> pd.Series:
    if which == "last":
        return cps.sort_values("training_iteration").iloc[-1]
    if which != "best":
        raise SweepError(f"checkpoint={which!r}: use 'best' or 'last'")
    metric = sweep.spec.checkpoint.score or sweep.metric
    values = pd.to_numeric(cps.get(metric), errors="coerce")
    if values is None or not np.isfinite(values.astype(float)).any():
        return cps.sort_values("training_iteration").iloc[-1]
    ascending = sweep.metric_mode(metric) == "min"
    return cps.assign(_v=values).sort_values(["_v", "training_iteration"], ascending=[ascending, False],
                                             na_position="last").iloc[0]


def load_model(sweep: Sweep, trial: str | pd.Series | None = None, *, checkpoint: str = "best",
               data_root: str | None = None, device: str = "cpu") -> LoadedModel:
    """Rebuild a trial's family and load one of its checkpoints.

    Args:
        trial: a trial id, a row of :meth:`~sweeplab.results.sweep.Sweep.dataframe` (e.g. from
            ``pick``), or None for the best trial by the job's objective.
        checkpoint: ``"best"`` (the kept checkpoint with the best ``checkpoint.score``, else
            objective, value) or ``"last"``.
        data_root: the dataset's folder on this machine, when it is not where the job said
            (a sweep folder copied from elsewhere); datasets without files need none.
        device: ``"cpu"`` or ``"cuda"``.

    Raises:
        SweepError: a multi-objective job without ``trial``, an unknown trial, no checkpoint.
        SpecError: the data root does not exist here (pass ``data_root``).
        CheckpointError: the checkpoint is not a safe sweeplab checkpoint.
    """
    import torch

    from sweeplab.kit.checkpoint import load_checkpoint_dir
    from sweeplab.kit.loop import build_family, trial_config
    from sweeplab.runner.data import prepare_data
    from sweeplab.spec import validate_spec

    if trial is None:
        if sweep.spec.multi_objective:
            raise SweepError(f"{sweep.path}: a multi-objective sweep has no single best trial; pass trial=, e.g. "
                             "s.load_model(s.pick('min num_params within 0.5% of val_accuracy'))")
        trial = sweep.best_trial()
    trial_id = str(trial["trial_id"]) if isinstance(trial, pd.Series) else str(trial)
    chosen = _choose(sweep, checkpoints(sweep, trial_id), checkpoint)
    spec = sweep.spec
    if data_root is not None:
        raw = spec.model_dump(mode="json")
        raw["data"]["root"] = str(data_root)
        spec = validate_spec(raw, source=f"{sweep.path} (data_root={data_root})", check_data=True)
    else:
        spec = validate_spec(spec.model_dump(mode="json"), source=f"{sweep.path}/sweeplab_job.yaml "
                             "(pass data_root= where the data is on this machine)", check_data=True)
    config = sweep.trial_configs()[trial_id]
    rng = torch.get_rng_state()
    try:
        fam = build_family(spec.trainable, config, prepare_data(spec), cpus=1, device=torch.device(device))
        load_checkpoint_dir(Path(chosen["checkpoint"]), fam)
    finally:
        torch.set_rng_state(rng)  # loading restores the trial's RNG; the caller's is left as it was
    metrics = {k: v for k, v in chosen.items() if k not in ("checkpoint", "_v")}
    return LoadedModel(family=fam, model=getattr(fam, "model", None),
                       config=trial_config(fam.__class__, config).model_dump(), trial_id=trial_id,
                       iteration=int(chosen["training_iteration"]), metrics=metrics,
                       checkpoint=Path(chosen["checkpoint"]))
