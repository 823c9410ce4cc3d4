"""The one training loop every model family shares, and the family registry.

A *model family* (CNN classifier, VAE, conjugated mixture model ...) is a subclass of
:class:`ModelFamily` that knows how to build its model from a validated config, run one
*iteration* (an epoch, or N optimisation steps) and evaluate. Everything around that is here,
written once: thread and device placement, seeding, resuming from Ray Tune checkpoints,
atomic checkpoint writes, divergence detection, per-iteration timing and ``tune.report``.

Adding a family means one module in ``sweeplab/trainables/`` whose class is decorated with
:func:`register_family`; the runner, the spec validation and the CLI find it by name.
"""
from __future__ import annotations

import abc
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sweeplab.datasets.base import DataBundle

#: Name of the state file inside every checkpoint directory.
STATE_FILE = "state.pt"


class FamilyConfig(BaseModel):
    """Hyperparameters shared by every family; families subclass it and add their own.

    Unknown keys are rejected, so a typo in a job file fails validation before Ray starts.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="base random seed; repeat r of a config runs with seed + r")
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads; default: the CPUs the trial was allotted")
    amp: bool = Field(False, description="mixed precision (bfloat16 autocast) when on a GPU")


class ModelFamily(abc.ABC):
    """Base class of a sweepable model family.

    Subclasses set the class attributes and implement the abstract methods; they never call
    Ray themselves. :func:`run_trial` drives them.

    Class attributes:
        name: the registered name used as ``trainable:`` in a job file.
        Config: the pydantic model of the family's hyperparameters (subclass of
            :class:`FamilyConfig`); every field needs a default or must be set in the job.
        metrics: reported metric name -> (natural mode ``"min"``/``"max"``, description);
            the spec checks ``metric:`` against these keys.
        loss_metric: the reported training loss checked for NaN/inf after every iteration.
    """

    name: ClassVar[str]
    Config: ClassVar[type[FamilyConfig]]
    metrics: ClassVar[dict[str, tuple[str, str]]]
    loss_metric: ClassVar[str] = "train_loss"

    def __init__(self, config: FamilyConfig, data: DataBundle, device: torch.device) -> None:
        self.config = config
        self.data = data
        self.device = device
        self.generator = torch.Generator().manual_seed(config.seed)

    # -- what a family implements ------------------------------------------------------------
    @property
    @abc.abstractmethod
    def num_iterations(self) -> int:
        """Total number of iterations (what Ray Tune calls ``training_iteration``)."""

    @abc.abstractmethod
    def train_iteration(self, iteration: int) -> dict[str, float]:
        """Run one iteration of training (0-based ``iteration``); return training metrics."""

    @abc.abstractmethod
    def evaluate(self, iteration: int) -> dict[str, float]:
        """Evaluate on held-out data after ``iteration``; return the metrics."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: tensors, numbers, strings, lists, dicts only
        (checkpoints are read back with ``torch.load(weights_only=True)``)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # -- optional hooks -------------------------------------------------------------------------
    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Raise ``ValueError`` with a clear message if ``data`` cannot feed this family."""

    @classmethod
    def num_iterations_of(cls, config: FamilyConfig) -> int:
        """``num_iterations`` computed from a config alone (used for ASHA's ``max_t`` default)."""
        return int(getattr(config, "epochs"))

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """Images to log to TensorBoard after ``iteration``: tag -> ``[3, H, W]`` float in [0, 1].
        Default: none."""
        return {}

    def extra_results(self) -> dict[str, float]:
        """Constant facts reported with every result (e.g. ``num_params``). Default: none."""
        return {}


_FAMILIES: dict[str, type[ModelFamily]] = {}


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: make ``cls`` available as ``trainable: <cls.name>`` in job files.

    Raises:
        ValueError: if the name is taken, or a metric has the name of a hyperparameter.
    """
    if cls.name in _FAMILIES and _FAMILIES[cls.name] is not cls:
        raise ValueError(f"model family {cls.name!r} is registered twice")
    clash = sorted(set(cls.metrics) & set(cls.Config.model_fields))
    if clash:  # tables and TensorBoard key both by name: a metric must not shadow a hyperparameter
        raise ValueError(f"{cls.__name__}: metrics {clash} share names with hyperparameters; rename them")
    _FAMILIES[cls.name] = cls
    return cls


def family_names() -> list[str]:
    """Names of every registered family, sorted."""
    from sweeplab import trainables  # noqa: F401  (imports every family module)

    return sorted(_FAMILIES)


def get_family(name: str) -> type[ModelFamily]:
    """The family registered as ``name``.

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    names = family_names()
    if name not in _FAMILIES:
        raise KeyError(f"unknown trainable {name!r}; known trainables: {', '.join(names)}")
    return _FAMILIES[name]


# ------------------------------------------------------------------------------------------------
# Helpers families share
# ------------------------------------------------------------------------------------------------
def to_float_images(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """``uint8`` images ``[B, C, H, W]`` (0..255) -> ``float32`` on ``device`` in [0, 1]."""
    t = torch.as_tensor(x)
    t = t.to(device, non_blocking=True)
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


def shared_tensor(x: np.ndarray) -> torch.Tensor:
    """Wrap a (possibly read-only, object-store backed) array as a tensor without copying."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(x)


def batches(n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
            drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples: the tensor batch path (no DataLoader, no per-sample work).

    Args:
        n: number of samples.
        batch_size: samples per batch.
        shuffle: draw a fresh permutation from ``generator``.
        generator: torch RNG (its state is checkpointed, so resumed epochs see the same order).
        drop_last: skip a final short batch.

    Yields:
        ``int64`` index tensors of shape ``[batch_size]`` (the last may be shorter).
    """
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - (n % batch_size) if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path`` and rename: never a half-written file.

    If saving fails part-way, the temporary file is removed and ``path`` keeps its old content.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint_dir(directory: Path, family: ModelFamily, iteration: int,
                        train_seconds: float = 0.0) -> None:
    """Write the family's state after ``iteration`` (1-based count of finished iterations)
    and the cumulative training seconds so far."""
    state = {
        "iteration": iteration,
        "train_seconds": float(train_seconds),
        "family": family.state_dict(),
        "generator": family.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    _atomic_save(state, directory / STATE_FILE)


def load_checkpoint_dir(directory: Path, family: ModelFamily) -> tuple[int, float]:
    """Restore a family from a checkpoint directory.

    Returns:
        ``(finished iterations, cumulative training seconds)``.

    Uses ``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain data only,
    never code.

    Raises:
        CheckpointError: the file holds pickled objects other than tensors and plain data
            (nothing in it is executed), or it is not a checkpoint at all.
    """
    import pickle

    path = directory / STATE_FILE
    try:
        state = torch.load(path, map_location=family.device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused to load: a checkpoint may hold only tensors and plain data "
                              f"(torch.load weights_only=True): {first}") from None
    family.load_state_dict(state["family"])
    family.generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    return int(state["iteration"]), float(state.get("train_seconds", 0.0))


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be loaded safely (unsafe pickled objects, truncated, not torch)."""


# ------------------------------------------------------------------------------------------------
# Fault injection (for testing sweeps' fault tolerance on real clusters)
# ------------------------------------------------------------------------------------------------
#: Environment variable read by the driver (``sweeplab run`` / ``resume``) and handed to every
#: trial: ``KIND@ITERATION[:KEY=VALUE[,KEY=VALUE...]]`` rules separated by ``;``.
FAULT_ENV = "SWEEPLAB_FAULT_INJECT"
FAULT_KINDS = ("raise", "nan", "exit")


class InjectedFault(RuntimeError):
    """The error a ``raise`` rule of ``SWEEPLAB_FAULT_INJECT`` raises inside a trial."""


def parse_fault_rules(text: str | None) -> list[tuple[str, int, dict[str, str]]]:
    """Parse ``SWEEPLAB_FAULT_INJECT``: faults injected into matching trials, for testing.

    Each rule is ``KIND@ITERATION[:KEY=VALUE,...]``; rules are separated by ``;``.

    * ``raise@2``: the trial raises :class:`InjectedFault` in its 2nd iteration (1-based, Ray's
      ``training_iteration``), after training and before reporting (Ray Tune retries it up to
      ``failure.max_failures`` times from its last checkpoint, then marks it errored).
    * ``nan@1``: the training loss of iteration 1 is reported as NaN (the trial is "diverged").
    * ``exit@3``: the trial's worker process dies at once (``os._exit``), like an OOM kill.
    * ``:norm=batch,variant=big``: only trials whose config has these values (compared as text).

    Returns:
        ``[(kind, iteration, {key: value})]``.

    Raises:
        ValueError: a malformed rule (the message shows the expected form).
    """
    rules = []
    for raw in (text or "").split(";"):
        rule = raw.strip()
        if not rule:
            continue
        head, _, cond = rule.partition(":")
        kind, at, it = head.partition("@")
        match: dict[str, str] = {}
        for item in filter(None, (c.strip() for c in cond.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                kind = ""  # malformed condition
                break
            match[key.strip()] = value.strip()
        if kind.strip() not in FAULT_KINDS or not at or not it.strip().isdigit() or int(it) < 1:
            raise ValueError(f"{FAULT_ENV}: {rule!r} is not KIND@ITERATION[:KEY=VALUE,...] with KIND one of "
                             f"{', '.join(FAULT_KINDS)} and ITERATION >= 1 (e.g. raise@2:norm=batch)")
        rules.append((kind.strip(), int(it), match))
    return rules


def _fault_for(rules: list[tuple[str, int, dict[str, str]]], config: dict[str, Any],
               iteration: int) -> str | None:
    """The fault kind to inject in 1-based ``iteration`` of the trial with ``config``, if any."""
    for kind, at, match in rules:
        if at == iteration and all(str(config.get(k)) == v for k, v in match.items()):
            return kind
    return None


def trial_device() -> torch.device:
    """The device of a trial: CUDA when Ray allotted it a GPU (whole or a fraction, e.g.
    ``resources.gpu: 0.25``) and CUDA works, else the CPU (CPU-only trials on GPU nodes stay on
    the CPU). Outside Ray: CUDA if available."""
    if not _gpu_allotted():
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    import warnings

    warnings.warn("this trial was allotted a GPU but torch cannot use CUDA here; training on the CPU",
                  RuntimeWarning, stacklevel=2)
    return torch.device("cpu")


def _node_id() -> str:
    """The Ray node id of this process ("" outside Ray): tells nodes apart when they share a hostname."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001
        return ""


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def run_trial(config: dict[str, Any], *, data: DataBundle, family: str,
              settings: dict[str, Any] | None = None) -> None:
    """The Ray Tune function trainable shared by every family.

    Args:
        config: the trial's hyperparameters as Ray Tune hands them over: the job's fixed
            ``train`` values merged with the sampled ones. Keys starting with ``__`` (Ray's
            ``__trial_index__``, the repeat of a sampled configuration, added to ``seed``) and
            ``variant`` are bookkeeping, not hyperparameters. (A grid's repeats carry their seed.)
        data: the sweep's dataset, put in the object store once by the runner.
        family: registered family name.
        settings: ``checkpoint_every`` (iterations between checkpoints, default 1),
            ``cpus`` (CPUs allotted per trial), ``media_every`` (iterations between TensorBoard
            images, 0 = never), ``fault_inject`` (rules as in :func:`parse_fault_rules`; default:
            the ``SWEEPLAB_FAULT_INJECT`` environment variable).

    Reports after every iteration: the family's metrics, ``iteration_seconds`` (wall-clock
    seconds of the iteration), ``train_seconds`` (cumulative), ``seed``, ``diverged`` (0/1),
    ``node`` (hostname), ``node_id`` (Ray's node id), ``device`` (``cpu``/``cuda``), and a
    checkpoint every ``checkpoint_every`` iterations and at the end.

    When the training loss becomes NaN or infinite, the trial reports ``diverged=1`` with every
    declared metric NaN and ends (no retry, no checkpoint of the broken model); the sweep goes on.
    """
    from ray import tune

    settings = settings or {}
    fam_cls = get_family(family)
    params = {k: v for k, v in config.items() if not k.startswith("__") and k != "variant"}
    repeat = int(config.get("__trial_index__", 0) or 0)
    params["seed"] = int(params.get("seed", 0)) + repeat
    cfg = fam_cls.Config.model_validate(params)

    cpus = settings.get("cpus") or 1
    torch.set_num_threads(int(cfg.threads or max(1, int(cpus))))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    device = trial_device()
    faults = parse_fault_rules(settings["fault_inject"] if "fault_inject" in settings
                               else os.environ.get(FAULT_ENV))

    fam = fam_cls(cfg, data, device)
    start, train_seconds = 0, 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start, train_seconds = load_checkpoint_dir(Path(d), fam)

    every = max(1, int(settings.get("checkpoint_every", 1)))
    media_every = int(settings.get("media_every", 0) or 0)
    constant = {"seed": cfg.seed, "node": os.uname().nodename, "node_id": _node_id(), "device": device.type,
                **fam.extra_results()}
    writer = None
    total = fam.num_iterations
    for it in range(start, total):
        t0 = time.perf_counter()
        result = dict(fam.train_iteration(it))
        train_seconds += time.perf_counter() - t0
        fault = _fault_for(faults, config, it + 1) if faults else None
        if fault == "raise":
            raise InjectedFault(f"{FAULT_ENV}: injected error in iteration {it + 1}")
        if fault == "exit":
            os._exit(70)
        if fault == "nan":
            result[fam.loss_metric] = float("nan")
        if not _finite(result.get(fam.loss_metric, 0.0)):
            # Every declared metric is reported as NaN: Optuna records the trial as failed, ASHA
            # ignores it when ranking, and the analysis marks it "diverged". No checkpoint of a
            # NaN model is written, and the trial ends here instead of erroring and retrying.
            nan = {m: float("nan") for m in fam.metrics}
            tune.report({**nan, **constant, **result, "diverged": 1, "train_seconds": train_seconds,
                         "iteration_seconds": time.perf_counter() - t0})
            return
        result.update(fam.evaluate(it))
        result.update(constant)
        result["iteration_seconds"] = time.perf_counter() - t0
        result["train_seconds"] = train_seconds
        result["diverged"] = 0
        if media_every and ((it + 1) % media_every == 0 or it + 1 == total):
            images = fam.media(it)
            if images:
                writer = writer or _media_writer(settings.get("experiment_dir"))
                for tag, img in images.items():
                    writer.add_image(tag, img.detach().cpu().clamp(0, 1).numpy(), it + 1)
                writer.flush()
        if (it + 1) % every == 0 or it + 1 == total:
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint_dir(Path(d), fam, it + 1, train_seconds)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(result)
    if writer is not None:
        writer.close()


def _gpu_allotted() -> bool:
    try:
        import ray

        return bool(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - outside Ray: use the GPU if there is one
        return True


def _media_writer(experiment_dir: str | None):
    """A tensorboardX writer for image grids, beside Ray's scalar events in the trial's folder
    (``<experiment_dir>/trial_<id>``, the runner's trial folder name). Without a local
    experiment folder (cloud storage) it writes in the trial's working directory, which Ray
    uploads (``SyncConfig(sync_artifacts=True)``)."""
    from ray import tune
    from tensorboardX import SummaryWriter

    ctx = tune.get_context()
    if experiment_dir:
        logdir = str(Path(experiment_dir) / f"trial_{ctx.get_trial_id()}")
    else:
        logdir = ctx.get_trial_dir()
    return SummaryWriter(logdir=logdir, filename_suffix=".media")
