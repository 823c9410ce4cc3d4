"""What a model family is, and the registry that finds one by name.

A *model family* (CNN classifier, VAE, conjugated mixture model, regression MLP ...) is a
subclass of :class:`ModelFamily` that builds its model from a validated config, runs one
*iteration* (an epoch, or N optimisation steps) and evaluates. The shared loop
(:func:`sweeplab.kit.loop.run_trial`) does everything around that: threads and device, seeding,
checkpoints, divergence, timing and ``tune.report``.

Adding a family means one module ``sweeplab/families/<name>.py`` whose class is decorated with
:func:`register_family` (``name`` equal to the module's name). The registry lists families by
module name without importing them, and imports only the family a job asks for: validating a
job never imports the other families' models.
"""
from __future__ import annotations

import abc
import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from sweeplab.metrics.convention import LOOP_METRICS, Metric, metric_table

if TYPE_CHECKING:  # the kit's heavy imports stay out of `sweeplab validate`
    import torch

    from sweeplab.datasets.base import DataBundle

#: The package whose modules are the families, one module a family.
FAMILIES_PACKAGE = "sweeplab.families"


class FamilyConfig(BaseModel):
    """Hyperparameters shared by every family; families subclass it and add their own (often
    with the kit's mixins :class:`~sweeplab.kit.optim.OptimizerConfig`,
    :class:`~sweeplab.kit.optim.ScheduleConfig`, :class:`~sweeplab.kit.evaluation.EvalConfig`).

    Unknown keys are rejected, so a typo in a job file fails validation before Ray starts.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="training seed; repeat r of a config runs with seed + r "
                                     "(the data's own seed is data.data_seed)")
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads; default: the CPUs the trial was allotted")
    amp: bool = Field(False, description="mixed precision (bfloat16 autocast) on a GPU; refused by "
                                         "families without a mixed-precision path")


class ModelFamily(abc.ABC):
    """Base class of a sweepable model family.

    Subclasses set the class attributes and implement the abstract methods; they never call
    Ray themselves.

    Class attributes:
        name: the registered name used as ``trainable:`` in a job file (= the module's name).
        Config: the pydantic model of the family's hyperparameters (a :class:`FamilyConfig`).
        metrics: every metric the family reports, as :class:`~sweeplab.metrics.convention.Metric`
            (the loop adds :data:`~sweeplab.metrics.convention.LOOP_METRICS`).
        loss_metric: the reported training loss checked for NaN/inf after every iteration.
        data_tasks: the :attr:`DataBundle.task` kinds the family can train on.
        supports_amp: True if ``amp: true`` changes what the family computes on a GPU; the spec
            refuses ``amp`` for a family without it.
        renamed: old metric name -> current name, so sweep folders written before a rename load.
        contract_config: tiny hyperparameters (a few seconds, two iterations) for the contract
            test every registered family runs (``tests/test_family_contract.py``).
        contract_data: the tiny data that test makes for the family: ``task`` (default the first
            of :attr:`data_tasks`), ``sample_shape`` (default ``(1, 8, 8)`` images for
            classification, ``(3,)`` vectors otherwise), ``dtype`` (``uint8`` images or
            ``float32``), ``num_classes`` (3), ``target_shape`` (``(1,)``), sample counts.
    """

    name: ClassVar[str]
    Config: ClassVar[type[FamilyConfig]]
    metrics: ClassVar[tuple[Metric, ...]]
    loss_metric: ClassVar[str] = "train_loss"
    data_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    supports_amp: ClassVar[bool] = False
    renamed: ClassVar[dict[str, str]] = {}
    contract_config: ClassVar[dict[str, Any]] = {}
    contract_data: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: FamilyConfig, data: "DataBundle", device: "torch.device") -> None:
        import torch

        self.config = config
        self.data = data
        self.device = device
        #: the family's CPU RNG, checkpointed with it: resumed iterations draw the same numbers
        self.generator = torch.Generator().manual_seed(config.seed)

    # -- what a family implements ------------------------------------------------------------
    @property
    def num_iterations(self) -> int:
        """Total number of iterations (what Ray Tune calls ``training_iteration``): by default
        :meth:`num_iterations_of` this trial's config, so a family states its budget once."""
        return self.num_iterations_of(self.config)

    @abc.abstractmethod
    def train_iteration(self, iteration: int) -> dict[str, float]:
        """Run one iteration of training (0-based ``iteration``); return the ``train_*`` metrics."""

    @abc.abstractmethod
    def evaluate(self, iteration: int) -> dict[str, float]:
        """Evaluate after ``iteration``; return the ``val_*``/``test_*`` (and run) metrics."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: tensors, numbers, strings, lists, dicts only
        (checkpoints are read back with ``torch.load(weights_only=True)``)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # -- optional hooks -------------------------------------------------------------------------
    @classmethod
    def check_data(cls, data: "DataBundle", config: FamilyConfig) -> None:
        """Raise ``ValueError`` with a clear message if ``data`` cannot feed this family.
        Default: the bundle's task must be one of :attr:`data_tasks`."""
        if data.task not in cls.data_tasks:
            raise ValueError(f"{cls.name} trains on {' or '.join(cls.data_tasks)} data; dataset "
                             f"{data.name!r} is {data.task} data")

    @classmethod
    def num_iterations_of(cls, config: FamilyConfig) -> int:
        """``num_iterations`` computed from a config alone (ASHA's ``max_t`` default, and each
        trial's own budget when tables label it completed or stopped). Default: ``epochs``."""
        return int(getattr(config, "epochs"))

    @classmethod
    def metric_table(cls) -> dict[str, Metric]:
        """``{name: Metric}`` of the family's metrics and the loop's, in declaration order."""
        return metric_table((*cls.metrics, *LOOP_METRICS))

    def media(self, iteration: int) -> dict[str, "torch.Tensor"]:
        """Images to log to TensorBoard after ``iteration``: tag -> ``[3, H, W]`` float in [0, 1].
        Default: none."""
        return {}

    def extra_results(self) -> dict[str, float]:
        """Constant facts reported with every result (e.g. ``num_params``); each must be declared
        in :attr:`metrics`. Default: none."""
        return {}


_FAMILIES: dict[str, type[ModelFamily]] = {}


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: make ``cls`` available as ``trainable: <cls.name>`` in job files.

    Raises:
        ValueError: a name taken twice; metrics that are not :class:`Metric` or are declared
            twice; a metric named like a hyperparameter or a loop metric; an undeclared
            ``loss_metric``; a ``renamed`` target that is not declared.
    """
    if cls.name in _FAMILIES and _FAMILIES[cls.name] is not cls:
        raise ValueError(f"model family {cls.name!r} is registered twice")
    if not all(isinstance(m, Metric) for m in cls.metrics):
        raise ValueError(f"{cls.__name__}.metrics must be Metric objects (sweeplab.metrics.convention)")
    table = metric_table(cls.metrics)
    loop = {m.name for m in LOOP_METRICS}
    clash = sorted(set(table) & (set(cls.Config.model_fields) | loop))
    if clash:  # tables and TensorBoard key both by name: a metric must not shadow a hyperparameter
        raise ValueError(f"{cls.__name__}: metrics {clash} share names with hyperparameters or the "
                         "loop's metrics; rename them")
    if cls.loss_metric not in table:
        raise ValueError(f"{cls.__name__}: loss_metric {cls.loss_metric!r} is not among its metrics")
    stale = sorted(new for new in cls.renamed.values() if new not in table and new not in loop)
    if stale:
        raise ValueError(f"{cls.__name__}.renamed maps to undeclared metrics {stale}")
    _FAMILIES[cls.name] = cls
    return cls


def family_names() -> list[str]:
    """Names of every family: the modules of ``sweeplab.families`` (not imported) and any
    family registered from elsewhere, sorted."""
    package = importlib.import_module(FAMILIES_PACKAGE)
    modules = {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")}
    return sorted(modules | set(_FAMILIES))


def get_family(name: str) -> type[ModelFamily]:
    """The family registered as ``name`` (importing its module on first use).

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    if name not in _FAMILIES and name in family_names():
        importlib.import_module(f"{FAMILIES_PACKAGE}.{name}")
    if name not in _FAMILIES:
        raise KeyError(f"unknown trainable {name!r}; known trainables: {', '.join(family_names())}")
    return _FAMILIES[name]
