"""``cnn_classifier``: the plain CNN image classifier of the Fashion-MNIST journal as a sweepable
model family (``shared/seeds/fashion_cnn_journal.md``; model in :mod:`sweeplab.models.cnn`).

One iteration is one epoch over the training split on the tensor batch path: index batches from
:func:`~sweeplab.trainables.base.batches` pick rows of the bundle's ``uint8`` arrays, which are
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
* ``current_lr``: learning rate used during the epoch (of the first parameter group).
* ``num_params``: number of model parameters (constant, via ``extra_results``).

``lr_schedule: plateau`` steps ``ReduceLROnPlateau`` once per epoch on ``val_loss`` when the
bundle has a validation split, else on ``train_loss``; never on the test loss.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from sweeplab.datasets.base import DataBundle
from sweeplab.metrics.classification import correct_count
from sweeplab.models.cnn import ConvNet, num_params
from sweeplab.trainables.base import (FamilyConfig, ModelFamily, batches, register_family,
                                      shared_tensor, to_float_images)

#: Learning rate used when ``lr`` is not set: the common defaults of each optimizer
#: (PyTorch's for Adam, AdamW and Adadelta; Keras' 1e-3 for RMSprop, whose PyTorch default 1e-2
#: is too large for these nets; 0.05 for SGD with momentum).
DEFAULT_LR: dict[str, float] = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.05, "adadelta": 1.0,
                                "rmsprop": 1e-3}
#: Weight decay used when ``weight_decay`` is not set (AdamW's PyTorch default; 0 otherwise).
DEFAULT_WEIGHT_DECAY: dict[str, float] = {"adamw": 1e-2}


class CNNClassifierConfig(FamilyConfig):
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
    # training
    batch_size: int = Field(128, ge=1, description="training samples per step")
    eval_batch_size: int = Field(
        256, ge=1, description="samples per evaluation batch (256 measured fastest on CPU; 1024 is slower)")
    epochs: int = Field(5, ge=1, description="epochs (= iterations)")
    optimizer: Literal["adam", "adamw", "sgd", "adadelta", "rmsprop"] = "adam"
    lr: float | None = Field(None, gt=0.0, description="learning rate; default DEFAULT_LR[optimizer]")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum (sgd only)")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd only; needs momentum > 0)")
    weight_decay: float | None = Field(
        None, ge=0.0, description="L2 penalty (decoupled for adamw); default 0.01 for adamw, else 0")
    lr_schedule: Literal["none", "plateau"] = "none"
    plateau_patience: int = Field(1, ge=0, description="epochs without improvement before a cut")
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0, description="lr multiplier at a cut")
    augment: Literal["none", "flip_crop"] = Field(
        "none", description="random horizontal flip + padded random crop on batch tensors")
    crop_padding: int | None = Field(
        None, ge=0, description="pixels of zero padding for the random crop; default min(H, W) // 8, at least 1")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross-entropy label smoothing")
    channels_last: bool | None = Field(
        None, description="channels-last memory format; default: on unless norm is instance "
        "(measured on CPU: 1.2-2.5x faster steps for none/batch/layer/group, slower for instance)")

    @model_validator(mode="after")
    def _check_nesterov(self) -> "CNNClassifierConfig":
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: true needs momentum > 0 with optimizer sgd")
        return self

    @property
    def use_channels_last(self) -> bool:
        """``channels_last``, or by default True unless ``norm == "instance"`` (measured at one
        CPU thread: channels-last makes a training step 1.2-2x faster with no, batch, layer
        or group norm, through oneDNN convolutions and pooling, but 25% slower with instance
        norm, whose per-channel statistics want the contiguous layout)."""
        return self.channels_last if self.channels_last is not None else self.norm != "instance"

    @property
    def effective_lr(self) -> float:
        """``lr``, or the optimizer's default from :data:`DEFAULT_LR`."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def effective_weight_decay(self) -> float:
        """``weight_decay``, or the optimizer's default from :data:`DEFAULT_WEIGHT_DECAY`."""
        if self.weight_decay is not None:
            return self.weight_decay
        return DEFAULT_WEIGHT_DECAY.get(self.optimizer, 0.0)


def build_optimizer(params, cfg: CNNClassifierConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` with ``cfg``'s learning rate and weight decay.

    ``sgd`` uses ``momentum``/``nesterov``; the other optimizers use PyTorch's defaults for
    everything else (``momentum`` does not apply to them).

    Raises:
        ValueError: for an unknown optimizer name.
    """
    lr, wd = cfg.effective_lr, cfg.effective_weight_decay
    name = cfg.optimizer
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


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
    metrics: ClassVar[dict[str, tuple[str, str]]] = {
        "train_loss": ("min", "mean training objective over the epoch (nats per sample)"),
        "train_accuracy": ("max", "fraction of training samples correct during the epoch"),
        "val_loss": ("min", "cross-entropy on the validation split (nats per sample)"),
        "val_accuracy": ("max", "fraction correct on the validation split"),
        "test_loss": ("min", "cross-entropy on the test split (nats per sample)"),
        "test_accuracy": ("max", "fraction correct on the test split"),
        "current_lr": ("min", "learning rate used during the epoch (logged, not a tuning target)"),
        "num_params": ("min", "number of model parameters"),
    }
    loss_metric: ClassVar[str] = "train_loss"

    def __init__(self, config: CNNClassifierConfig, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        c, h, w = data.sample_shape
        self.model = ConvNet((c, h, w), data.num_classes, n_blocks=cfg.n_blocks,
                             filters=cfg.filters, kernel_size=cfg.kernel_size,
                             dropout=cfg.dropout, norm=cfg.norm,
                             channel_growth=cfg.channel_growth, pooling=cfg.pooling,
                             head_hidden=cfg.head_hidden).to(device)
        self.memory_format = torch.channels_last if cfg.use_channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.scheduler = None
        if cfg.lr_schedule == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=cfg.plateau_factor,
                patience=cfg.plateau_patience)
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
        self._num_params = num_params(self.model)

    # -- ModelFamily hooks ---------------------------------------------------------------------
    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Require labelled image data ``[N, C, H, W]`` with at least two classes.

        Raises:
            ValueError: naming what is wrong with the bundle.
        """
        if not data.is_image:
            raise ValueError(f"cnn_classifier needs images [N, C, H, W]; dataset {data.name!r} "
                             f"has samples of shape {data.sample_shape}")
        if data.num_classes < 2:
            raise ValueError(f"cnn_classifier needs >= 2 classes; {data.name!r} has {data.num_classes}")
        for split, y in (("train", data.y_train), ("test", data.y_test), ("val", data.y_val)):
            if y is not None and len(y) and (y.min() < 0 or y.max() >= data.num_classes):
                raise ValueError(f"{data.name!r} {split} labels must lie in 0..{data.num_classes - 1} "
                                 f"(found {y.min()}..{y.max()}); unlabelled data cannot train a classifier")

    @property
    def num_iterations(self) -> int:
        """Number of epochs."""
        return self.config.epochs

    def extra_results(self) -> dict[str, float]:
        """``{"num_params": ...}``, reported with every result."""
        return {"num_params": self._num_params}

    def _inputs(self, x_uint8: torch.Tensor, augment: bool) -> torch.Tensor:
        """``uint8 [B, C, H, W]`` rows -> standardised float images on the device."""
        x = to_float_images(x_uint8, self.device)
        if augment and self.config.augment == "flip_crop":
            x = random_flip_crop(x, self.crop_padding, self.generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=bool(self.config.amp and self.device.type == "cuda"))

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch over the training split in shuffled mini-batches of ``batch_size``.

        A final batch of a single sample is skipped (BatchNorm cannot train on it).

        Returns:
            ``train_loss`` (nats per sample), ``train_accuracy`` (fraction) and ``current_lr``.
        """
        cfg = self.config
        self.model.train()
        lr = float(self.optimizer.param_groups[0]["lr"])
        x_all, y_all = self._x["train"], self._y["train"]
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct, seen = 0, 0
        for idx in batches(len(y_all), cfg.batch_size, shuffle=True, generator=self.generator):
            if len(idx) < 2:
                continue
            xb = self._inputs(x_all[idx], augment=True)
            yb = y_all[idx].to(self.device)
            with self._autocast():
                logits = self.model(xb)
                loss = self.train_criterion(logits.float(), yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
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
            with self._autocast():
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
        if self.scheduler is not None and self._scheduler_stepped_at != iteration:
            self.scheduler.step(monitored)
            self._scheduler_stepped_at = iteration
        return out

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and scheduler state plus the bookkeeping of the plateau step."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "last_train_loss": self._last_train_loss,
            "scheduler_stepped_at": self._scheduler_stepped_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (for the same config)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._last_train_loss = float(state.get("last_train_loss", float("nan")))
        self._scheduler_stepped_at = int(state.get("scheduler_stepped_at", -1))
