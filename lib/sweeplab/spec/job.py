"""The job file's sections and the whole :class:`JobSpec` (structure only: the checks that need
the family and dataset registries are in :mod:`sweeplab.spec.load`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from sweeplab.spec.hypotheses import HypothesisSpec
from sweeplab.spec.space import SearchSpec, _Strict

#: schedulers that stop trials early (their trials' last results mix budgets)
EARLY_STOPPING = ("asha", "hyperband", "median")


# --------------------------------------------------------------------------------------------
class DataSpec(_Strict):
    """``data:`` which dataset, where, and which share of it."""

    name: str
    root: str | None = Field(None, description="folder with the dataset's files (~ and $VARS expand)")
    download: bool = False
    train_fraction: float = Field(1.0, gt=0, le=1)
    test_fraction: float = Field(1.0, gt=0, le=1)
    val_fraction: float = Field(0.0, ge=0, lt=1)
    subset_seed: int = Field(0, description="seed of the subsets and of the validation split")
    data_seed: int = Field(0, description="seed of a generated dataset's samples (e.g. gmm3d), kept apart "
                                          "from the training seed so that repeats share one dataset")
    options: dict[str, Any] = Field(default_factory=dict)

    def resolved_root(self, base: Path | None = None) -> Path | None:
        """The root with ``~`` and environment variables expanded; relative roots are taken
        from ``base`` (the current directory by default)."""
        if self.root is None:
            return None
        p = Path(os.path.expandvars(os.path.expanduser(self.root)))
        return p if p.is_absolute() else (base or Path.cwd()) / p


class SchedulerSpec(_Strict):
    """``scheduler:`` what stops trials early, from Ray Tune: ``asha`` (asynchronous successive
    halving, Li et al. 2020), ``hyperband`` (Li et al. 2018, Ray's synchronous
    ``HyperBandScheduler``), ``median`` (median stopping rule, Golovin et al. 2017, Google
    Vizier), or ``none`` (every trial runs its budget)."""

    type: Literal["asha", "hyperband", "median", "none"] = "asha"
    max_t: int | None = Field(None, ge=1, description="asha, hyperband: iterations a trial may run "
                                                      "(default: the family's)")
    grace_period: int = Field(1, ge=1, description="asha, median: iterations before a trial may be stopped")
    reduction_factor: float = Field(3.0, gt=1, description="asha, hyperband: keep 1/reduction_factor a rung")
    min_samples_required: int = Field(3, ge=1, description="median: trials that must have reached an "
                                                           "iteration before the median there stops one")

    @model_validator(mode="after")
    def _fields_of_type(self) -> "SchedulerSpec":
        own = {"asha": {"max_t", "grace_period", "reduction_factor"},
               "hyperband": {"max_t", "reduction_factor"},
               "median": {"grace_period", "min_samples_required"}, "none": set()}[self.type]
        # saved jobs list every field at its default: only a changed value of another type's setting is an error
        stray = sorted(k for k in self.model_fields_set - own - {"type"}
                       if getattr(self, k) != type(self).model_fields[k].default)
        if stray:
            raise ValueError(f"scheduler.{stray[0]}: not a setting of scheduler type {self.type!r} "
                             f"(it takes {', '.join(sorted(own)) or 'none'})")
        return self


class ResourcesSpec(_Strict):
    """``resources:`` per trial."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class CheckpointSpec(_Strict):
    """``checkpoint:`` how often and how many."""

    every: int = Field(1, ge=1, description="iterations between checkpoints (and always at the end)")
    keep: int | None = Field(2, ge=1, description="checkpoints kept per trial (null: all)")
    score: str | None = Field(None, description="keep the checkpoints with the best values of this metric "
                              "(Ray's checkpoint_score_attribute) instead of the latest; the latest is "
                              "kept too, so a trial still resumes where it stopped")


class FailureSpec(_Strict):
    """``failure:`` retries of a failed trial from its last checkpoint."""

    max_failures: int = Field(0, ge=-1, description="-1: retry forever")


class MLflowSpec(_Strict):
    """``logging.mlflow:`` every trial as an MLflow run (Ray's ``MLflowLoggerCallback``): its
    hyperparameters as params, its metrics at every iteration (step = training_iteration)."""

    tracking_uri: str | None = Field(None, description="MLflow tracking URI: a server (http://host:5000), a "
                                     "local store (file:/abs/mlruns, sqlite:///mlflow.db); default: MLflow's "
                                     "own ($MLFLOW_TRACKING_URI)")
    experiment: str | None = Field(None, description="MLflow experiment (created if missing; default: the "
                                                     "sweep's name)")
    tags: dict[str, str] = Field(default_factory=dict, description="tags set on every run")


class WandbSpec(_Strict):
    """``logging.wandb:`` every trial as a Weights & Biases run (Ray's ``WandbLoggerCallback``),
    grouped by sweep; offline runs are written under each trial's folder (``wandb sync`` them)."""

    project: str = Field(description="W&B project")
    entity: str | None = Field(None, description="W&B team or user (default: your default entity)")
    group: str | None = Field(None, description="run group (default: the sweep's name)")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="online needs an API key (wandb login or $WANDB_API_KEY); offline writes run "
                          "files to upload later; default: $WANDB_MODE, else online")
    tags: list[str] = Field(default_factory=list)


class LoggingSpec(_Strict):
    """``logging:`` extra TensorBoard output and opt-in experiment trackers
    (:mod:`sweeplab.runner.trackers`)."""

    media_every: int = Field(0, ge=0, description="iterations between image grids (0 = never)")
    mlflow: MLflowSpec | None = None
    wandb: WandbSpec | None = None


class JobSpec(_Strict):
    """A whole job file. See README.md for the annotated example."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    trainable: str
    data: DataSpec
    train: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec = Field(default_factory=SearchSpec)
    metric: str | list[str] = Field(description="the objective, or a list of objectives (multi-objective)")
    mode: Literal["min", "max"] | list[Literal["min", "max"] | None] | None = None
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    repeats: int = Field(1, ge=1)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    storage_path: str | None = None
    hypotheses: list[HypothesisSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _objectives(self) -> "JobSpec":
        metrics = self.objectives()
        if not metrics or len(set(metrics)) != len(metrics):
            raise ValueError(f"metric: give one metric or a list of distinct metrics (got {self.metric!r})")
        if isinstance(self.mode, list) and len(self.mode) != len(metrics):
            raise ValueError(f"mode: {len(self.mode)} modes for {len(metrics)} metrics; give one mode per metric")
        if isinstance(self.mode, list) and not isinstance(self.metric, list):
            raise ValueError("mode: a list of modes needs a list of metrics")
        if isinstance(self.metric, list) and len(self.metric) == 1:
            self.metric = self.metric[0]
            self.mode = self.mode[0] if isinstance(self.mode, list) else self.mode
        return self

    # -- derived ---------------------------------------------------------------------------------
    def family(self):
        """The registered :class:`~sweeplab.kit.family.ModelFamily` class (imports its module).

        Raises:
            KeyError: an unknown trainable, listing the known ones.
        """
        from sweeplab.kit.family import get_family

        return get_family(self.trainable)

    def objectives(self) -> list[str]:
        """The objective metrics: ``[metric]``, or the list of a multi-objective job."""
        return list(self.metric) if isinstance(self.metric, list) else [self.metric]

    @property
    def multi_objective(self) -> bool:
        """True for a job with several objectives (a Pareto front, no single best)."""
        return len(self.objectives()) > 1

    @property
    def primary_metric(self) -> str:
        """The first objective: what tables sort by and single-metric views show."""
        return self.objectives()[0]

    def resolved_modes(self) -> list[str]:
        """The mode of each objective: ``mode:`` (one for all, or one each), else the metric's
        declared direction.

        Raises:
            ValueError: an objective has no natural mode and the job sets none (the spec's
                validation reports this first).
        """
        metrics = self.objectives()
        modes = self.mode if isinstance(self.mode, list) else [self.mode] * len(metrics)
        table = self.family().metric_table()
        out = []
        for metric, mode in zip(metrics, modes):
            mode = mode or table[metric].mode
            if mode is None:
                raise ValueError(f"metric: {metric!r} has no better direction; set mode: min or max")
            out.append(mode)
        return out

    def resolved_mode(self) -> str:
        """The (first) objective's mode: ``mode``, or its natural mode declared by the family.

        Raises:
            ValueError: the objective has no natural mode (``Metric.mode is None``) and the job
                sets no ``mode:`` (the spec's validation reports this first).
        """
        return self.resolved_modes()[0]

    def family_config(self, extra: dict[str, Any] | None = None):
        """The family's Config for the fixed ``train`` values (plus ``extra``), validated."""
        return self.family().Config.model_validate({**self.train, **(extra or {})})

    def max_iterations(self) -> int:
        """Iterations of the longest trial: ``scheduler.max_t`` when ASHA sets one, else the
        family's count for the ``train`` values, for each variant, and for each end of every
        searched range and each categorical value (so a searched ``epochs`` or ``steps`` gives
        ASHA the budget of its largest value). Configurations the family rejects are skipped."""
        from pydantic import ValidationError

        from sweeplab.spec.space import CategoricalParam

        if self.scheduler.type in ("asha", "hyperband") and self.scheduler.max_t:
            return self.scheduler.max_t
        fam = self.family()
        probes: list[dict[str, Any]] = [{}]
        for key, p in self.search.space.items():
            values = p.values if isinstance(p, CategoricalParam) else [p.low, p.high]  # type: ignore[union-attr]
            probes += [{key: v} for v in values]
        probes += [{k: v for k, v in var.items() if k != "name"} for var in self.search.variants]
        counts = []
        for extra in probes:
            try:
                counts.append(fam.num_iterations_of(self.family_config(extra)))
            except (ValidationError, TypeError, ValueError):
                continue
        return max(counts) if counts else fam.num_iterations_of(self.family_config())

    def total_trials(self) -> int:
        """Trials the sweep will run (grid: points × repeats; else num_samples × repeats)."""
        n = len(self.search.grid_points()) if self.search.sampler == "grid" else self.search.num_samples
        return n * self.repeats
