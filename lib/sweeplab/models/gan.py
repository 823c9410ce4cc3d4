"""The GAN of the course report (fully connected) and a DCGAN backbone, with the
non-saturating losses.

Sources: ``../shared/specs/ann_course.md`` §8 (the report's §4.2: a fully connected generator with
LeakyReLU and a Tanh output, a fully connected discriminator with LeakyReLU, Dropout and a sigmoid;
the widths are the spec's proposal, G ``z -> 256 -> 512 -> 1024 -> D`` and D ``D -> 1024 -> 512 ->
256 -> 1``, LeakyReLU 0.2, dropout 0.3, images in [-1, 1]); the DCGAN backbone follows Radford,
Metz & Chintala (ICLR 2016): strided (transposed) convolutions, BatchNorm, ReLU in G and
LeakyReLU 0.2 in D, no pooling, a Tanh output. The losses are Goodfellow et al. (2014)'s, with the
non-saturating generator loss ``-log D(G(z))`` (the report's §Q1). No training loop lives here.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Backbone = Literal["mlp", "dcgan"]


class MLPGenerator(nn.Module):
    """``z [B, latent] -> Linear 256 -> 512 -> 1024 (LeakyReLU 0.2) -> Linear D -> Tanh``, reshaped
    to ``out_shape`` ``(C, H, W)``; outputs in (-1, 1)."""

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        d = int(torch.tensor(out_shape).prod())
        widths = [latent_dim, 256, 512, 1024]
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Linear(1024, d), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, latent]`` -> ``[B, C, H, W]`` images in (-1, 1)."""
        return self.net(z).view(len(z), *self.out_shape)


class MLPDiscriminator(nn.Module):
    """``x [B, C, H, W] -> Flatten -> 1024 -> 512 -> 256 (LeakyReLU 0.2, Dropout 0.3) -> 1``;
    returns the logit of "real" (the report's sigmoid is applied inside the loss)."""

    def __init__(self, in_shape: tuple[int, ...], dropout: float = 0.3) -> None:
        super().__init__()
        d = int(torch.tensor(in_shape).prod())
        widths = [d, 1024, 512, 256]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers, nn.Linear(256, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B]`` logits."""
        return self.net(x).squeeze(1)


class DCGANGenerator(nn.Module):
    """``z -> Linear(latent, 128 * H/4 * W/4) -> BN -> ReLU -> ConvT(128, 64, 4, 2, 1) -> BN -> ReLU
    -> ConvT(64, C, 4, 2, 1) -> Tanh`` (Radford et al. 2016, sized for 28x28 MNIST).

    Raises:
        ValueError: ``H`` or ``W`` not divisible by 4.
    """

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        c, h, w = out_shape
        if h % 4 or w % 4:
            raise ValueError(f"backbone dcgan needs image sides divisible by 4, got {h}x{w}; use backbone mlp")
        self.start = (128, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, 128 * (h // 4) * (w // 4), bias=False),
                                nn.BatchNorm1d(128 * (h // 4) * (w // 4)), nn.ReLU())
        self.deconv = nn.Sequential(nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                    nn.ConvTranspose2d(64, c, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, latent]`` -> ``[B, C, H, W]`` images in (-1, 1)."""
        return self.deconv(self.fc(z).view(len(z), *self.start))


class DCGANDiscriminator(nn.Module):
    """``x -> Conv(C, 64, 4, 2, 1) -> LeakyReLU -> Conv(64, 128, 4, 2, 1) -> BN -> LeakyReLU ->
    Flatten -> Linear(128 * H/4 * W/4, 1)`` (Radford et al. 2016); returns logits.

    Raises:
        ValueError: ``H`` or ``W`` not divisible by 4.
    """

    def __init__(self, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        c, h, w = in_shape
        if h % 4 or w % 4:
            raise ValueError(f"backbone dcgan needs image sides divisible by 4, got {h}x{w}; use backbone mlp")
        self.net = nn.Sequential(
            nn.Conv2d(c, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(128 * (h // 4) * (w // 4), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B]`` logits."""
        return self.net(x).squeeze(1)


def build_gan(backbone: Backbone, image_shape: tuple[int, ...], latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """``(generator, discriminator)`` of ``backbone`` for images ``(C, H, W)``.

    Raises:
        ValueError: an unknown backbone, or dcgan with sides not divisible by 4.
    """
    if backbone == "mlp":
        return MLPGenerator(latent_dim, image_shape), MLPDiscriminator(image_shape)
    if backbone == "dcgan":
        return DCGANGenerator(latent_dim, image_shape), DCGANDiscriminator(image_shape)
    raise ValueError(f"backbone must be mlp or dcgan, not {backbone!r}")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``1/2 (BCE(D(x), 1) + BCE(D(G(z)), 0))``, batch means, in nats: ``ln 2 = 0.693`` for a
    discriminator that cannot tell (the report's first-epoch 0.698 implies this halving)."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real + fake)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss ``-mean log D(G(z))`` in nats (Goodfellow et al. 2014)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
