"""The DERP-VAE / beta-VAE / standard VAE modules and their multi-loss.

Everything follows ``shared/specs/derp_vae.md``: the fully connected (``mlp``) encoder, decoder,
classifier on ``z`` and perceptual feature net phi of the runs; the convolutional (``conv``)
encoder/decoder the runs named as their next step; and the loss

    L = BCE_sum(x_hat, x)/B + beta * KL_sum/B + lambda_ks * L_DERP
        + w_cls * CE(cls(z), y) + w_perc * MSE(phi(x), phi(x_hat))

with the spec's ``w_cls = 0.5`` and ``w_perc = 0.3`` as defaults. No training loop lives here
(see ``sweeplab.families.vae``).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sweeplab.metrics import vae as vm

Arch = Literal["mlp", "conv"]
Perceptual = Literal["trainable", "frozen", "off"]

#: Width of the perceptual features phi(x) (the spec's ``Linear(h/2, 32)``).
PERCEPTUAL_FEATURES = 32


class MLPEncoder(nn.Module):
    """The runs' encoder: ``Linear(D, h) -> ReLU -> Dropout(0.2) -> Linear(h, h/2) -> ReLU`` and
    two linear heads ``mu`` and ``log sigma^2`` of width ``d``.

    Source: ``shared/specs/derp_vae.md`` ("Architecture").

    Args:
        in_shape: one sample's shape ``(C, H, W)``; ``D = C*H*W``.
        hidden_dim: ``h`` (even, >= 2).
        latent_dim: ``d``.
    """

    def __init__(self, in_shape: tuple[int, ...], hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        in_dim = int(torch.tensor(in_shape).prod())
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(hidden_dim, hidden_dim // 2), nn.ReLU())
        self.mu = nn.Linear(hidden_dim // 2, latent_dim)
        self.logvar = nn.Linear(hidden_dim // 2, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, H, W]`` in [0, 1] -> ``(mu, logvar)``, each ``[B, d]``."""
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class MLPDecoder(nn.Module):
    """The runs' decoder: ``Linear(d, h/2) -> ReLU -> Dropout(0.2) -> Linear(h/2, h) -> ReLU ->
    Linear(h, D) -> Sigmoid``, reshaped to the image shape.

    Source: ``shared/specs/derp_vae.md`` ("Architecture").
    """

    def __init__(self, out_shape: tuple[int, ...], hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        out_dim = int(torch.tensor(out_shape).prod())
        self.body = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim // 2), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(hidden_dim // 2, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, out_dim), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` -> ``[B, C, H, W]`` Bernoulli means in (0, 1)."""
        return self.body(z).view(z.shape[0], *self.out_shape)


def conv_plan(height: int, width: int, base_channels: int = 32, max_channels: int = 256) -> list[int]:
    """Channel widths of the stride-2 stages of :class:`ConvEncoder` for an ``H x W`` input.

    The input is halved (kernel 4, stride 2, padding 1) while both sides are even and at least 8,
    so 28x28 -> 14 -> 7, 32x32 -> 16 -> 8 -> 4 and 64x64 -> 32 -> 16 -> 8 -> 4; the transposed
    convolutions of :class:`ConvDecoder` restore the exact size. Widths start at
    ``base_channels`` and double per stage up to ``max_channels``.

    Returns:
        One width per stage (possibly empty for odd or tiny inputs, which then go straight to
        the fully connected layer).
    """
    widths: list[int] = []
    h, w, c = height, width, base_channels
    while h >= 8 and w >= 8 and h % 2 == 0 and w % 2 == 0:
        widths.append(min(c, max_channels))
        h, w, c = h // 2, w // 2, c * 2
    return widths


class ConvEncoder(nn.Module):
    """A small DCGAN-style encoder (Radford et al. 2016): stride-2 ``Conv2d(k=4, p=1)`` stages with
    BatchNorm (not on the first stage) and LeakyReLU(0.2), then ``Linear(feat, h) -> ReLU`` and
    the heads ``mu`` and ``log sigma^2``.

    Works for 28x28x1, 32x32x3 and 64x64x3 inputs (see :func:`conv_plan`). The runs' proposed
    next step (``shared/seeds/derp_vae_runs.md``); not part of the runs themselves.

    Args:
        in_shape: ``(C, H, W)``.
        hidden_dim: ``h``, width of the fully connected layer.
        latent_dim: ``d``.
    """

    def __init__(self, in_shape: tuple[int, ...], hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        c, h, w = in_shape
        widths = conv_plan(h, w)
        layers: list[nn.Module] = []
        prev = c
        for k, width in enumerate(widths):
            layers.append(nn.Conv2d(prev, width, 4, 2, 1, bias=k == 0))
            if k > 0:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            prev = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        feat = prev * (h >> len(widths)) * (w >> len(widths))
        self.fc = nn.Sequential(nn.Linear(feat, hidden_dim), nn.ReLU())
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, H, W]`` in [0, 1] -> ``(mu, logvar)``, each ``[B, d]``."""
        h = self.fc(self.features(x))
        return self.mu(h), self.logvar(h)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: ``Linear(d, h) -> ReLU -> Linear(h, feat) -> ReLU``, then
    stride-2 ``ConvTranspose2d(k=4, p=1)`` stages with BatchNorm and ReLU, the last one to ``C``
    channels followed by a Sigmoid.
    """

    def __init__(self, out_shape: tuple[int, ...], hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        c, h, w = out_shape
        self.out_shape = tuple(out_shape)
        widths = conv_plan(h, w)
        self.start = (widths[-1] if widths else c, h >> len(widths), w >> len(widths))
        feat = self.start[0] * self.start[1] * self.start[2]
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, feat))
        layers: list[nn.Module] = [] if not widths else [nn.ReLU()]
        rev = widths[::-1]
        for k, width in enumerate(rev):
            last = k == len(rev) - 1
            out = c if last else rev[k + 1]
            layers.append(nn.ConvTranspose2d(width, out, 4, 2, 1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(out), nn.ReLU()]
        self.deconv = nn.Sequential(*layers, nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` -> ``[B, C, H, W]`` Bernoulli means in (0, 1)."""
        return self.deconv(self.fc(z).view(z.shape[0], *self.start))


class Classifier(nn.Module):
    """Classifier head on the sampled ``z``: ``Linear(d, 2d) -> ReLU -> Dropout(0.3) -> Linear(2d, C)``.

    Source: ``shared/specs/derp_vae.md`` ("Architecture").
    """

    def __init__(self, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, 2 * latent_dim), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(2 * latent_dim, num_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` -> ``[B, C]`` logits."""
        return self.net(z)


class PerceptualNet(nn.Module):
    """The runs' perceptual feature net phi: ``Linear(D, h) -> ReLU -> Linear(h, h/2) -> ReLU ->
    Linear(h/2, 32)`` on the flattened image.

    Trained jointly with the VAE (``perceptual: trainable``) it can map everything to one point,
    so the perceptual loss collapses to 0 (the CIFAR runs' test perceptual loss was exactly 0.0);
    ``frozen`` keeps its random initial weights. Source: ``shared/specs/derp_vae.md``.
    """

    def __init__(self, in_shape: tuple[int, ...], hidden_dim: int) -> None:
        super().__init__()
        in_dim = int(torch.tensor(in_shape).prod())
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, hidden_dim // 2), nn.ReLU(),
                                 nn.Linear(hidden_dim // 2, PERCEPTUAL_FEATURES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, 32]`` features."""
        return self.net(x)


@dataclasses.dataclass
class VAEOutput:
    """What :meth:`DerpVAE.forward` returns (``B`` samples, ``d`` latent dims, ``C`` classes)."""

    x_hat: torch.Tensor   #: ``[B, C_in, H, W]`` reconstruction (Bernoulli means)
    mu: torch.Tensor      #: ``[B, d]`` posterior means
    logvar: torch.Tensor  #: ``[B, d]`` posterior log-variances
    z: torch.Tensor       #: ``[B, d]`` reparameterised sample ``mu + sigma * eps``
    logits: torch.Tensor  #: ``[B, C]`` classifier logits on ``z``


class DerpVAE(nn.Module):
    """VAE + classifier on ``z`` + optional perceptual net: the model of all three variants
    (standard VAE, beta-VAE, DERP-VAE differ only in the loss weights).

    Source: ``shared/specs/derp_vae.md``.

    Args:
        in_shape: one image's shape ``(C, H, W)``.
        num_classes: ``C`` of the classifier.
        arch: ``"mlp"`` (the runs) or ``"conv"`` (DCGAN-style).
        hidden_dim: ``h``.
        latent_dim: ``d``.
        perceptual: ``"trainable"`` (the runs: phi is optimised with the model), ``"frozen"``
            (random phi, no gradient into its weights) or ``"off"`` (no perceptual term).

    Raises:
        ValueError: for an unknown ``arch``/``perceptual``, a non-image shape or an odd ``h``
            with ``arch="mlp"``.
    """

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, *, arch: Arch = "mlp",
                 hidden_dim: int = 256, latent_dim: int = 4, perceptual: Perceptual = "trainable") -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"DerpVAE needs image samples (C, H, W), got shape {tuple(in_shape)}")
        if hidden_dim < 2 or hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even and >= 2 (the spec uses h and h/2), got {hidden_dim}")
        if arch == "mlp":
            self.encoder: nn.Module = MLPEncoder(in_shape, hidden_dim, latent_dim)
            self.decoder: nn.Module = MLPDecoder(in_shape, hidden_dim, latent_dim)
        elif arch == "conv":
            self.encoder = ConvEncoder(in_shape, hidden_dim, latent_dim)
            self.decoder = ConvDecoder(in_shape, hidden_dim, latent_dim)
        else:
            raise ValueError(f"arch must be 'mlp' or 'conv', got {arch!r}")
        self.classifier = Classifier(latent_dim, num_classes)
        if perceptual not in ("trainable", "frozen", "off"):
            raise ValueError(f"perceptual must be 'trainable', 'frozen' or 'off', got {perceptual!r}")
        self.perceptual_mode = perceptual
        self.perceptual = None if perceptual == "off" else PerceptualNet(in_shape, hidden_dim)
        if perceptual == "frozen":
            self.perceptual.requires_grad_(False)
        self.latent_dim = latent_dim

    def train(self, mode: bool = True) -> "DerpVAE":
        """As ``nn.Module.train``; a frozen phi always stays in eval mode."""
        super().train(mode)
        if self.perceptual is not None and self.perceptual_mode == "frozen":
            self.perceptual.eval()
        return self

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> VAEOutput:
        """Encode, sample ``z = mu + exp(logvar/2) * eps``, decode and classify ``z``.

        Args:
            x: ``[B, C, H, W]`` images in [0, 1].
            eps: ``[B, d]`` standard normal noise; drawn from the global RNG when ``None``
                (pass it to make evaluation independent of the training RNG).
        """
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        return VAEOutput(self.decoder(z), mu, logvar, z, self.classifier(z))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` latent codes -> ``[B, C, H, W]`` images in (0, 1)."""
        return self.decoder(z)


@dataclasses.dataclass
class LossWeights:
    """Weights of the multi-loss (``shared/specs/derp_vae.md``, "Loss per batch").

    Standard VAE: ``beta=1, lambda_ks=0``; beta-VAE: ``beta != 1, lambda_ks=0``;
    DERP-VAE: ``beta=1, lambda_ks>0``.
    """

    beta: float = 1.0
    lambda_ks: float = 0.0
    cls_weight: float = 0.5
    perc_weight: float = 0.3


def multi_loss(model: DerpVAE, out: VAEOutput, x: torch.Tensor, y: torch.Tensor,
               directions: torch.Tensor | None, weights: LossWeights) -> dict[str, torch.Tensor]:
    """The spec's multi-loss of one batch.

        L = BCE_sum/B + beta * KL_sum/B + lambda_ks * L_DERP + w_cls * CE(cls(z), y)
            + w_perc * MSE(phi(x), phi(x_hat))

    ``BCE_sum`` and ``KL_sum`` are sums over the batch and all pixels / latent dims, so their
    ``/B`` forms are per-sample nats; ``CE`` is the batch-mean cross-entropy (nats); MSE is the
    mean over the batch and the 32 features. ``L_DERP`` (:func:`sweeplab.metrics.vae.ks_probe`)
    is computed whenever ``directions`` is given, also for ``lambda_ks = 0`` (then it is only
    reported). Source: ``shared/specs/derp_vae.md``.

    Args:
        model: the model (for phi).
        out: ``model(x)``.
        x: ``[B, C, H, W]`` targets in [0, 1].
        y: ``[B]`` int64 labels.
        directions: ``[P, d]`` unit probes, or ``None`` to skip the DERP term.
        weights: the loss weights.

    Returns:
        ``loss`` (the total, differentiable) and the detached terms ``recon``, ``kl``, ``derp``,
        ``ce``, ``perc`` (0-dim tensors).

    Raises:
        ValueError: if ``lambda_ks > 0`` but no probes are given.
    """
    recon = vm.recon_bce(out.x_hat, x).mean()
    kl = vm.kl_gaussian(out.mu, out.logvar).mean()
    loss = recon + weights.beta * kl
    zero = recon.new_zeros(())
    derp = zero
    if directions is not None:
        derp = vm.ks_probe(out.z, directions)
        if weights.lambda_ks:
            loss = loss + weights.lambda_ks * derp
    elif weights.lambda_ks:
        raise ValueError("lambda_ks > 0 needs probe directions")
    ce = F.cross_entropy(out.logits, y)
    if weights.cls_weight:
        loss = loss + weights.cls_weight * ce
    perc = zero
    if model.perceptual is not None:
        perc = F.mse_loss(model.perceptual(out.x_hat), model.perceptual(x))
        if weights.perc_weight:
            loss = loss + weights.perc_weight * perc
    return {"loss": loss, "recon": recon.detach(), "kl": kl.detach(), "derp": derp.detach(),
            "ce": ce.detach(), "perc": perc.detach()}
