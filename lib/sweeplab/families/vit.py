"""``vit``: a Vision Transformer image classifier (the ANN course report's §3.3 Q2 on MNIST;
``../shared/specs/ann_course.md`` §6; model in :mod:`sweeplab.models.vit`).

Training, evaluation, metrics and checkpoints are those of ``cnn_classifier``
(:class:`~sweeplab.families.cnn_classifier.CNNClassifier`: one epoch an iteration, inputs
standardised per channel with the training statistics, cross-entropy in nats, accuracy as a
fraction); only the model differs. The defaults are the tutorial's the spec proposes where the
report is silent: patch 7 (16 tokens + a class token), dim 64, depth 6, 8 heads, mlp_dim 128,
Adam at lr 3e-3, batch 100, 20 epochs.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator
from torch import nn

from sweeplab.datasets.base import DataBundle
from sweeplab.families.cnn_classifier import CNNClassifier, ImageTrainingConfig
from sweeplab.kit.family import FamilyConfig, register_family
from sweeplab.models.vit import ViT


class ViTConfig(ImageTrainingConfig):
    """Hyperparameters of ``vit`` (training fields from
    :class:`~sweeplab.families.cnn_classifier.ImageTrainingConfig`)."""

    patch_size: int = Field(7, ge=1, le=64, description="side of the square patches (must divide the image)")
    dim: int = Field(64, ge=1, le=2048, description="token width (a multiple of heads)")
    depth: int = Field(6, ge=1, le=48, description="encoder layers")
    heads: int = Field(8, ge=1, le=64, description="attention heads, each of width dim / heads")
    mlp_dim: int = Field(128, ge=1, le=8192, description="hidden width of each layer's MLP")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout in attention, MLP and residuals")
    emb_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the embedded tokens")
    lr: float | None = Field(3e-3, gt=0.0, description="learning rate (the tutorial's Adam 3e-3)")
    batch_size: int = Field(100, ge=1, description="training samples per step (the tutorial's 100)")
    epochs: int = Field(20, ge=1, description="epochs (= iterations); the report's 20")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "ViTConfig":
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        return self


@register_family
class ViTClassifier(CNNClassifier):
    """Sweepable Vision Transformer classifier (see the module docstring)."""

    name: ClassVar[str] = "vit"
    Config: ClassVar[type[FamilyConfig]] = ViTConfig
    contract_config: ClassVar[dict[str, Any]] = {"epochs": 2, "patch_size": 4, "dim": 8, "depth": 1, "heads": 2,
                                                 "mlp_dim": 16, "batch_size": 16}

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """The image checks of ``cnn_classifier``, and a patch size that divides the image.

        Raises:
            ValueError: naming what does not fit.
        """
        super().check_data(data, config)
        _, h, w = data.sample_shape
        if h % config.patch_size or w % config.patch_size:
            raise ValueError(f"vit: patch_size {config.patch_size} must divide the {h}x{w} images of {data.name!r}")

    def build_model(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        """A :class:`~sweeplab.models.vit.ViT` of the config."""
        cfg = self.config
        return ViT(in_shape, num_classes, patch_size=cfg.patch_size, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                   mlp_dim=cfg.mlp_dim, dropout=cfg.dropout, emb_dropout=cfg.emb_dropout)
