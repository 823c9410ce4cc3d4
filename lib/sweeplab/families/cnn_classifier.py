"""``cnn_classifier``: the plain CNN image classifier of the Fashion-MNIST journal as a sweepable
model family (``shared/seeds/fashion_cnn_journal.md``; model in :mod:`sweeplab.models.cnn`).

One iteration is one epoch over the training split on the tensor batch path: index batches from
:func:`~sweeplab.kit.tensors.batches` pick rows of the bundle's ``uint8`` arrays, which are
converted to float per batch (no DataLoader, no per-sample PIL work). Inputs are scaled to
[0, 1] and standardised per channel with the training split's mean and standard deviation.

Reported after every epoch:

* ``train_loss``: mean per-sample training objective over the epoch (cross-entropy in nats,
  with label smoothing when ``label_smoothing > 0``), measured on the fly in training mode
  (dropout on, augmented inputs, weights changing during the epoch).
* ``train_accuracy``: fraction of training samples classified correctly on the fly, as above.
* ``val_loss``, ``val_accuracy``: on the validation split, only when the bundle has one.
* ``test_loss``, ``test_accuracy``: on the test split.
  Evaluation losses are plain cross-entropy (nats per sample, no label smoothing), computed in
  eval mode without gradients in batches of ``eval_batch_size``.
* ``current_lr``: learning rate of the epoch's first step (of the first parameter group).
* ``num_params``: number of trainable model parameters (constant, via ``extra_results``).

The model's shape is the journal's by default; the ANN course's MNIST CNNs
(``../shared/specs/ann_course.md`` §5) add ``activation``, per-block ``kernel_sizes`` and
``block_filters``, ``padding: valid``, ``pool_rounding: floor`` and ``head_dropout``, enough to
write Keras' "simple MNIST convnet" (34,826 parameters; ``tune_jobs/course_mnist_keras.yaml``).
Subclasses (``vit``) reuse the training and evaluation and override :meth:`build_model`.

The loop adds ``iteration_seconds`` and ``train_seconds``. Optimizers, schedules, clipping and
the parameter count come from :mod:`sweeplab.kit.optim`: ``lr_schedule: plateau`` steps
``ReduceLROnPlateau`` once per epoch on ``val_loss`` when the bundle has a validation split,
else on ``train_loss`` (never on the test loss); ``cosine`` and ``lr_warmup_steps`` step after
every optimizer step. ``amp: true`` runs the forward passes under bfloat16 autocast on a GPU
(:func:`sweeplab.kit.device.autocast`).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.device import autocast
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.optim import (LRSchedule, OptimizerConfig, ScheduleConfig, build_optimizer,
                                clip_gradients, count_params)
from sweeplab.kit.tensors import batches, shared_tensor, to_float_images
from sweeplab.metrics.classification import correct_count
from sweeplab.metrics.convention import Metric, per_split
from sweeplab.models.cnn import ConvNet


class ImageTrainingConfig(OptimizerConfig, ScheduleConfig, FamilyConfig):
    """Training hyperparameters of the image classifiers (``cnn_classifier``, ``vit``); the
    optimizer and schedule fields are those of :class:`~sweeplab.kit.optim.OptimizerConfig` and
    :class:`~sweeplab.kit.optim.ScheduleConfig`."""

    batch_size: int = Field(128, ge=1, description="training samples per step")
    eval_batch_size: int = Field(
        256, ge=1, description="samples per evaluation batch (256 measured fastest on CPU; 1024 is slower)")
    epochs: int = Field(5, ge=1, description="epochs (= iterations)")
    optimizer: Literal["adam", "adamw", "sgd", "adadelta", "rmsprop"] = Field(
        "adam", description="adam | adamw | sgd | adadelta | rmsprop (lbfgs needs full batches: not offered)")
    augment: Literal["none", "flip_crop"] = Field(
        "none", description="random horizontal flip + padded random crop on batch tensors")
    crop_padding: int | None = Field(
        None, ge=0, description="pixels of zero padding for the random crop; default min(H, W) // 8, at least 1")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross-entropy label smoothing")
    channels_last: bool | None = Field(None, description="channels-last memory format; default: the family's")

    @property
    def use_channels_last(self) -> bool:
        """``channels_last``, default False (the CNN's default is its own)."""
        return bool(self.channels_last)

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimizer steps of one epoch over ``n_train`` samples (a final batch of one sample is
        skipped: BatchNorm cannot train on it)."""
        return n_train // self.batch_size + (1 if n_train % self.batch_size >= 2 else 0)


def _int_list(value: Any) -> Any:
    """``"3,3,3,2"`` -> ``[3, 3, 3, 2]`` (a categorical search value must be a string)."""
    if isinstance(value, str):
        try:
            return [int(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise ValueError(f"{value!r} is not a comma-separated list of whole numbers, e.g. '3,3,3,2'") from None
    return value


class CNNClassifierConfig(ImageTrainingConfig):
    """Hyperparameters of ``cnn_classifier`` (every field can be fixed or searched)."""

    # model (see sweeplab.models.cnn.ConvNet)
    n_blocks: int = Field(4, ge=1, le=12, description="convolutional blocks")
    filters: int = Field(32, ge=1, le=1024, description="channels of the first block")
    kernel_size: int = Field(3, ge=1, le=11, description="square kernel side")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout2d probability per block")
    norm: Literal["none", "batch", "layer", "group", "instance"] = Field(
        "batch", description="normalisation after each convolution")
    channel_growth: float = Field(1.0, gt=0.0, le=4.0, description="channel multiplier per pooling")
    pooling: Literal["early", "even"] = Field(
        "early", description="poolings after the first blocks (early) or spread evenly (even)")
    head_hidden: int = Field(0, ge=0, description="hidden units of the head (0 = linear head)")
    activation: Literal["relu", "leaky_relu", "tanh", "elu", "gelu"] = Field(
        "relu", description="activation after every normalisation")
    kernel_sizes: list[int] | None = Field(None, description="one kernel side per block, e.g. [3, 3, 3, 2] or "
                                           "'3,3,3,2' (overrides kernel_size); null = kernel_size everywhere")
    block_filters: list[int] | None = Field(None, description="channels per block, e.g. [32, 64] or '32,64' "
                                            "(overrides filters and channel_growth)")
    padding: Literal["same", "valid"] = Field("same", description="convolution padding (valid: none)")
    pool_rounding: Literal["ceil", "floor"] = Field("ceil", description="pooled sizes rounded up or down (Keras)")
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the head's linear layer")
    channels_last: bool | None = Field(
        None, description="channels-last memory format; default: on unless norm is instance "
        "(measured on CPU: 1.2-2.5x faster steps for none/batch/layer/group, slower for instance)")

    @field_validator("kernel_sizes", "block_filters", mode="before")
    @classmethod
    def _parse_lists(cls, value: Any) -> Any:
        return _int_list(value)

    @model_validator(mode="after")
    def _one_per_block(self) -> "CNNClassifierConfig":
        for name in ("kernel_sizes", "block_filters"):
            values = getattr(self, name)
            if values is not None and (len(values) != self.n_blocks or min(values) < 1):
                raise ValueError(f"{name}={values} needs {self.n_blocks} values >= 1, one per block (n_blocks)")
        return self

    @property
    def use_channels_last(self) -> bool:
        """``channels_last``, or by default True unless ``norm == "instance"`` (measured at one
        CPU thread: channels-last makes a training step 1.2-2x faster with no, batch, layer
        or group norm, through oneDNN convolutions and pooling, but 25% slower with instance
        norm, whose per-channel statistics want the contiguous layout)."""
        return self.channels_last if self.channels_last is not None else self.norm != "instance"


def random_flip_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and padded random crop of a whole batch at once.

    Each image is mirrored left-right with probability 1/2, zero-padded by ``padding`` pixels on
    every side and cropped back to ``H x W`` at a uniformly drawn offset (the torchvision
    ``RandomHorizontalFlip`` + ``RandomCrop(padding=...)`` recipe, done on the batch tensor).

    Args:
        x: float images ``[B, C, H, W]`` (zero padding = black for [0, 1]-scaled pixels).
        padding: pixels of padding (0 = flip only).
        generator: CPU torch RNG the flips and offsets are drawn from.

    Returns:
        a new tensor ``[B, C, H, W]`` on ``x``'s device.
    """
    b, c, h, w = x.shape
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if padding <= 0:
        return x
    xp = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = ox[:, None] + torch.arange(w, device=x.device)  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def channel_stats(x: np.ndarray, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of ``uint8`` images scaled to [0, 1].

    Args:
        x: ``[N, C, H, W]`` images (``uint8`` 0..255, or float already in [0, 1]).
        chunk: images per chunk (bounds the float64 temporary memory).

    Returns:
        ``(mean, std)``, each ``float32 [C]``; ``std`` is floored at 1e-6 for constant data.
    """
    t = shared_tensor(x)
    scale = 255.0 if t.dtype == torch.uint8 else 1.0
    c = t.shape[1]
    s1 = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for start in range(0, t.shape[0], chunk):
        part = t[start:start + chunk].to(torch.float64).div_(scale)
        s1 += part.sum(dim=(0, 2, 3))
        s2 += part.square().sum(dim=(0, 2, 3))
    n = t.shape[0] * t.shape[2] * t.shape[3]
    mean = s1 / n
    std = (s2 / n - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


@register_family
class CNNClassifier(ModelFamily):
    """Sweepable CNN image classifier (see the module docstring for what it reports)."""

    name: ClassVar[str] = "cnn_classifier"
    Config: ClassVar[type[FamilyConfig]] = CNNClassifierConfig
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "nats", "mean training objective over the epoch (cross-entropy with "
                                            "label smoothing, on the fly in training mode)"),
        Metric("train_accuracy", "max", "fraction", "training samples classified correctly during the epoch"),
        *per_split("loss", "min", "nats", "cross-entropy per sample in eval mode, no label smoothing"),
        *per_split("accuracy", "max", "fraction", "samples classified correctly in eval mode"),
        Metric("current_lr", None, "learning rate", "learning rate of the epoch's first step (logged, "
                                                    "not a tuning target)"),
        Metric("num_params", "min", "count", "trainable model parameters"),
    )
    loss_metric: ClassVar[str] = "train_loss"
    data_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    supports_amp: ClassVar[bool] = True
    renamed: ClassVar[dict[str, str]] = {}
    contract_config: ClassVar[dict[str, Any]] = {"epochs": 2, "filters": 4, "n_blocks": 1, "batch_size": 16}

    def __init__(self, config: CNNClassifierConfig, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        c, h, w = data.sample_shape
        self.model = self.build_model((c, h, w), data.num_classes).to(device)
        self.memory_format = torch.channels_last if cfg.use_channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.params = list(self.model.parameters())
        self.optimizer = build_optimizer(self.params, cfg)
        self.schedule = LRSchedule(self.optimizer, cfg,
                                   total_steps=cfg.epochs * cfg.steps_per_epoch(len(data.y_train)))
        self.train_criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        mean, std = channel_stats(data.x_train)
        self.mean = mean.to(device)[None, :, None, None]
        self.std = std.to(device)[None, :, None, None]
        self.crop_padding = (cfg.crop_padding if cfg.crop_padding is not None
                             else max(1, min(h, w) // 8))
        self._x = {"train": shared_tensor(data.x_train), "test": shared_tensor(data.x_test)}
        self._y = {"train": shared_tensor(data.y_train), "test": shared_tensor(data.y_test)}
        if data.x_val is not None and data.y_val is not None:
            self._x["val"], self._y["val"] = shared_tensor(data.x_val), shared_tensor(data.y_val)
        self._last_train_loss = float("nan")
        self._scheduler_stepped_at = -1
        self._num_params = count_params(self.model)

    def build_model(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        """The classifier ``[B, C, H, W]`` -> ``[B, num_classes]`` logits: a
        :class:`~sweeplab.models.cnn.ConvNet` of the config (subclasses build theirs)."""
        cfg = self.config
        return ConvNet(in_shape, num_classes, n_blocks=cfg.n_blocks, filters=cfg.filters,
                       kernel_size=cfg.kernel_size, dropout=cfg.dropout, norm=cfg.norm,
                       channel_growth=cfg.channel_growth, pooling=cfg.pooling, head_hidden=cfg.head_hidden,
                       kernel_sizes=cfg.kernel_sizes, block_filters=cfg.block_filters,
                       activation=cfg.activation, padding=cfg.padding, pool_ceil=cfg.pool_rounding == "ceil",
                       head_dropout=cfg.head_dropout)

    # -- ModelFamily hooks ---------------------------------------------------------------------
    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Require labelled image data ``[N, C, H, W]`` with at least two classes.

        Raises:
            ValueError: naming what is wrong with the bundle.
        """
        super().check_data(data, config)
        if not data.is_image:
            raise ValueError(f"{cls.name} needs images [N, C, H, W]; dataset {data.name!r} "
                             f"has samples of shape {data.sample_shape}")
        if data.num_classes < 2:
            raise ValueError(f"{cls.name} needs >= 2 classes; {data.name!r} has {data.num_classes}")
        for split, y in (("train", data.y_train), ("test", data.y_test), ("val", data.y_val)):
            if y is not None and len(y) and (y.min() < 0 or y.max() >= data.num_classes):
                raise ValueError(f"{data.name!r} {split} labels must lie in 0..{data.num_classes - 1} "
                                 f"(found {y.min()}..{y.max()}); unlabelled data cannot train a classifier")

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
        """The ``ReduceLROnPlateau`` of ``lr_schedule: plateau`` (``None`` otherwise)."""
        return self.schedule.plateau

    def extra_results(self) -> dict[str, float]:
        """``{"num_params": ...}`` (trainable parameters), reported with every result."""
        return {"num_params": self._num_params}

    def _inputs(self, x_uint8: torch.Tensor, augment: bool) -> torch.Tensor:
        """``uint8 [B, C, H, W]`` rows -> standardised float images on the device."""
        x = to_float_images(x_uint8, self.device)
        if augment and self.config.augment == "flip_crop":
            x = random_flip_crop(x, self.crop_padding, self.generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch over the training split in shuffled mini-batches of ``batch_size``.

        A final batch of a single sample is skipped (BatchNorm cannot train on it). Gradients are
        clipped to ``grad_clip`` when set; per-step schedules step after every optimizer step.

        Returns:
            ``train_loss`` (nats per sample), ``train_accuracy`` (fraction) and ``current_lr``.
        """
        cfg = self.config
        self.model.train()
        lr = self.schedule.current_lr
        x_all, y_all = self._x["train"], self._y["train"]
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct, seen = 0, 0
        for idx in batches(len(y_all), cfg.batch_size, shuffle=True, generator=self.generator):
            if len(idx) < 2:
                continue
            xb = self._inputs(x_all[idx], augment=True)
            yb = y_all[idx].to(self.device)
            with autocast(self.device, cfg.amp):
                logits = self.model(xb)
                loss = self.train_criterion(logits.float(), yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(self.params, cfg.grad_clip)
            self.optimizer.step()
            self.schedule.after_step()
            total_loss += loss.detach() * len(idx)
            correct += correct_count(logits.detach(), yb)
            seen += len(idx)
        self._last_train_loss = float(total_loss) / max(seen, 1)
        return {"train_loss": self._last_train_loss, "train_accuracy": correct / max(seen, 1),
                "current_lr": lr}

    @torch.inference_mode()
    def evaluate_split(self, split: str) -> tuple[float, float]:
        """Mean cross-entropy (nats per sample, no label smoothing) and accuracy (fraction) of
        the current model on ``split`` (``"train"``, ``"val"`` or ``"test"``), in eval mode.

        Raises:
            KeyError: if the bundle has no such split.
        """
        self.model.eval()
        x_all, y_all = self._x[split], self._y[split]
        total, correct = 0.0, 0
        for idx in batches(len(y_all), self.config.eval_batch_size, shuffle=False):
            xb = self._inputs(x_all[idx], augment=False)
            yb = y_all[idx].to(self.device)
            with autocast(self.device, self.config.amp):
                logits = self.model(xb).float()
            total += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += correct_count(logits, yb)
        n = max(len(y_all), 1)
        return total / n, correct / n

    def evaluate(self, iteration: int) -> dict[str, float]:
        """Validation (when present) and test metrics after epoch ``iteration``; then one step
        of the plateau schedule on ``val_loss``, or on the epoch's ``train_loss`` without a
        validation split (never on ``test_loss``)."""
        out: dict[str, float] = {}
        monitored = self._last_train_loss
        if "val" in self._x:
            out["val_loss"], out["val_accuracy"] = self.evaluate_split("val")
            monitored = out["val_loss"]
        out["test_loss"], out["test_accuracy"] = self.evaluate_split("test")
        if self._scheduler_stepped_at != iteration:
            self.schedule.after_iteration(monitored)
            self._scheduler_stepped_at = iteration
        return out

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and schedule state plus the bookkeeping of the plateau step."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "last_train_loss": self._last_train_loss,
            "scheduler_stepped_at": self._scheduler_stepped_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (for the same config); a checkpoint written
        before the kit (its plateau state under ``scheduler``) loads too."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])
        elif self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._last_train_loss = float(state.get("last_train_loss", float("nan")))
        self._scheduler_stepped_at = int(state.get("scheduler_stepped_at", -1))
