"""``autoencoder``: a fully connected autoencoder reconstructing images (or vectors).

Source: ``../shared/specs/ann_course.md`` §4 (a), the course report's §3.1 Q1; model
:class:`sweeplab.models.autoencoder.Autoencoder` (the spec's proposal ``Linear(784, enc) -> ReLU ->
Linear(enc, 784) -> Sigmoid`` by default, deeper with ``hidden_dims``). Inputs are scaled to
[0, 1] (``uint8 / 255``) and flattened. The objective is the per-pixel mean squared error, Adam
1e-3 by default (every optimizer and schedule of :mod:`sweeplab.kit.optim` is available).

One reconstruction loss, defined once and reported the same way on every split: ``recon_mse``,
the mean over images and pixels of ``(x_hat - x)^2`` (Keras' ``mse``), computed in eval mode after
each epoch on the whole split: ``train_recon_mse``, ``val_recon_mse`` (with ``data.val_fraction``),
``test_recon_mse``. (The report's test losses are ~8x below its validation losses, which no single
definition gives; the spec flags it.) ``train_loss`` is the same quantity on the fly (the
epoch's mean over its training batches, weights changing), the one the loop checks for NaN.
Also ``current_lr`` and ``num_params``. One iteration is one epoch.

TensorBoard (``logging.media_every``): ``reconstructions``, 8 test images over their reconstructions.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.device import autocast
from sweeplab.kit.evaluation import EvalCache, EvalConfig
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.optim import LRSchedule, OptimizerConfig, ScheduleConfig, build_optimizer, count_params
from sweeplab.kit.tensors import batches, shared_tensor, to_float_images
from sweeplab.metrics.convention import Metric, per_split
from sweeplab.models.autoencoder import Autoencoder

#: Activations a job may name (those of :data:`sweeplab.models.autoencoder.ACTIVATIONS`).
Activation = Literal["relu", "sigmoid", "tanh", "elu", "leaky_relu"]


def flat_inputs(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Samples ``[B, ...]`` -> ``float32 [B, D]`` on ``device``, ``uint8`` scaled to [0, 1]."""
    t = to_float_images(x, device)
    return t.reshape(len(t), -1)


def check_unit_interval(name: str, data: DataBundle) -> None:
    """Raise ``ValueError`` when float inputs of ``data`` leave [0, 1] (``uint8`` is scaled) or a split is empty."""
    for split, x in (("train", data.x_train), ("test", data.x_test)):
        if len(x) == 0:
            raise ValueError(f"{name}: the {split} split of {data.name!r} is empty")
        if x.dtype != np.uint8 and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ValueError(f"{name} reconstructs through a sigmoid: float inputs of {data.name!r} must lie in "
                             f"[0, 1], but its {split} split spans [{float(x.min()):.3g}, {float(x.max()):.3g}]")


@register_family
class AutoencoderFamily(ModelFamily):
    """Plain autoencoder on per-pixel MSE; see the module docstring."""

    name: ClassVar[str] = "autoencoder"

    class Config(OptimizerConfig, ScheduleConfig, EvalConfig, FamilyConfig):
        """Hyperparameters of ``autoencoder``; defaults are the report's initial model (32/32/20)."""

        encoding_dim: int = Field(32, ge=1, description="width of the code")
        hidden_dims: list[Annotated[int, Field(ge=1)]] = Field(
            [], description="widths between input and code, mirrored in the decoder ([] = the spec's one-layer model)")
        activation: Activation = Field("relu", description="activation of every layer but the sigmoid output")
        batch_size: int = Field(32, ge=1, description="training images per step")
        eval_batch_size: int = Field(1000, ge=1, description="images per evaluation batch")
        epochs: int = Field(20, ge=1, description="iterations, one epoch each")

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "squared target units", "epoch mean of the training batches' per-pixel MSE, "
                                                            "on the fly"),
        *per_split("recon_mse", "min", "squared target units", "per-pixel (x_hat - x)^2 over the whole split, "
                   "eval mode", splits=("train", "val", "test")),
        Metric("current_lr", None, "learning rate", "learning rate of the epoch's first step"),
        Metric("num_params", "min", "count", "trainable parameters"),
    )
    data_tasks: ClassVar[tuple[str, ...]] = ("classification", "unlabelled")
    supports_amp: ClassVar[bool] = True
    contract_config: ClassVar[dict[str, Any]] = {"epochs": 2, "encoding_dim": 4, "hidden_dims": [8],
                                                 "batch_size": 16}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        n_in = int(np.prod(data.sample_shape))
        self.model = Autoencoder(n_in, cfg.encoding_dim, cfg.hidden_dims, cfg.activation).to(device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        steps = cfg.epochs * -(-len(data.x_train) // cfg.batch_size)
        self.schedule = LRSchedule(self.optimizer, cfg, total_steps=steps)
        self.eval_cache = EvalCache(cfg.eval_every, cfg.epochs)

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Raise ``ValueError`` for data of another task, float inputs outside [0, 1], or an empty split."""
        super().check_data(data, config)
        check_unit_interval(cls.name, data)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch of Adam (or the configured optimizer) on per-pixel MSE."""
        cfg = self.config
        self.model.train()
        x_all = shared_tensor(self.data.x_train)
        lr = self.schedule.current_lr
        total, count = 0.0, 0
        for idx in batches(len(x_all), cfg.batch_size, shuffle=True, generator=self.generator):
            x = flat_inputs(x_all[idx], self.device)
            with autocast(self.device, cfg.amp):
                out = self.model(x)
            loss = F.mse_loss(out.float(), x)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.after_step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        mean = total / max(count, 1)
        self.schedule.after_iteration(mean)
        return {"train_loss": mean, "current_lr": lr}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """``recon_mse`` on train, val (if any) and test, every ``eval_every`` epochs and after the last."""
        def compute() -> dict[str, float]:
            out = {"train_recon_mse": self.recon_mse(self.data.x_train),
                   "test_recon_mse": self.recon_mse(self.data.x_test)}
            if self.data.x_val is not None and len(self.data.x_val):
                out["val_recon_mse"] = self.recon_mse(self.data.x_val)
            return out

        return self.eval_cache.get(iteration, compute)

    @torch.no_grad()
    def recon_mse(self, x_np: np.ndarray) -> float:
        """Mean over the images and pixels of ``x_np`` of ``(x_hat - x)^2``, eval mode."""
        self.model.eval()
        x_all = shared_tensor(x_np)
        total = 0.0
        for idx in batches(len(x_all), self.config.eval_batch_size, shuffle=False):
            x = flat_inputs(x_all[idx], self.device)
            with autocast(self.device, self.config.amp):
                out = self.model(x)
            total += float(((out.float() - x) ** 2).mean(1).sum())
        return total / len(x_all)

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, schedule and the last metrics."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "last_eval": self.eval_cache.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.eval_cache.load_state_dict(state["last_eval"])

    def extra_results(self) -> dict[str, float]:
        """``num_params``."""
        return {"num_params": float(count_params(self.model))}

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """``reconstructions``: 8 test images (top) over their reconstructions, image data only."""
        from torchvision.utils import make_grid

        if not self.data.is_image:
            return {}
        self.model.eval()
        with torch.no_grad():
            x = flat_inputs(shared_tensor(self.data.x_test[:8]), self.device)
            out = self.model(x).float()
        images = torch.cat([x, out]).cpu().reshape(-1, *self.data.sample_shape)
        return {"reconstructions": make_grid(images, nrow=len(x), padding=2)}
