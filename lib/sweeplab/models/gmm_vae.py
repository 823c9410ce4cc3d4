"""A dense (fully connected) VAE on flat vectors, with a Gaussian, Bernoulli or categorical
likelihood: the GMM-3D report's VAE and the course VAE of MNIST share it.

Sources:

* ``../shared/specs/gmm_vae.md`` §2 (the GMM-3D report): encoder ``Linear(D, h) -> ReLU ->
  [Linear(h, h) -> ReLU] x (depth - 1) -> Linear(h, 2 dimz)``; the first half is mu, the second
  gives sigma² through a softplus (the course template ``VAE_extended``) or an exp (``logvar``);
  the decoder mirrors it and returns the mean of a Gaussian with fixed variance ``var_x``.
* ``../shared/specs/ann_course.md`` §9 (the course VAE): ``784 -> 300 -> (mu, log sigma²)(600)``
  and back, depth 1, with a categorical likelihood over ``num_vals`` grey levels
  (``theta = softmax(NN(z))``, Tomczak 2022) or a Bernoulli or Gaussian one.

The loss (:func:`neg_elbo_terms`) is the per-sample negative ELBO with one reparameterised z:
``-log p(x|z) + KL(q(z|x) || N(0, I))``. No training loop lives here.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Likelihood = Literal["gaussian", "bernoulli", "categorical"]
VarHead = Literal["softplus", "logvar"]
#: Smallest posterior variance (keeps log sigma² finite when a softplus underflows).
MIN_VAR = 1e-8


def mlp(in_dim: int, hidden: int, depth: int, out_dim: int) -> nn.Sequential:
    """``Linear(in, h) -> ReLU -> [Linear(h, h) -> ReLU] x (depth - 1) -> Linear(h, out)``.

    Raises:
        ValueError: ``depth < 1`` or a width below 1.
    """
    if depth < 1 or min(in_dim, hidden, out_dim) < 1:
        raise ValueError(f"mlp: depth ({depth}) and widths ({in_dim}, {hidden}, {out_dim}) must be >= 1")
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*layers)


class DenseVAE(nn.Module):
    """Dense VAE over ``D``-dimensional vectors (images are flattened by the caller).

    Args:
        in_dim: ``D``.
        latent_dim: ``dimz``.
        hidden: width ``h`` of every hidden layer.
        depth: hidden layers of the encoder (and of the decoder).
        likelihood: ``gaussian`` (decoder returns the mean), ``bernoulli`` (logits per element,
            data in [0, 1]) or ``categorical`` (logits ``[B, D, num_vals]``, data in [0, 1]
            quantised to ``num_vals`` levels).
        num_vals: levels of the categorical likelihood (>= 2).
        var_head: ``softplus`` (sigma² = softplus(raw), the course template) or ``logvar``
            (sigma² = exp(raw)).

    Raises:
        ValueError: an unknown likelihood or variance head, ``num_vals < 2``.
    """

    def __init__(self, in_dim: int, latent_dim: int, hidden: int, depth: int, *,
                 likelihood: Likelihood = "gaussian", num_vals: int = 256,
                 var_head: VarHead = "softplus") -> None:
        super().__init__()
        if likelihood not in ("gaussian", "bernoulli", "categorical"):
            raise ValueError(f"likelihood must be gaussian, bernoulli or categorical, not {likelihood!r}")
        if var_head not in ("softplus", "logvar"):
            raise ValueError(f"var_head must be softplus or logvar, not {var_head!r}")
        if likelihood == "categorical" and num_vals < 2:
            raise ValueError(f"num_vals must be >= 2 for a categorical likelihood, got {num_vals}")
        self.in_dim, self.latent_dim = int(in_dim), int(latent_dim)
        self.likelihood, self.num_vals, self.var_head = likelihood, int(num_vals), var_head
        out = in_dim * (num_vals if likelihood == "categorical" else 1)
        self.encoder = mlp(in_dim, hidden, depth, 2 * latent_dim)
        self.decoder = mlp(latent_dim, hidden, depth, out)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, D]`` -> ``(mu [B, dimz], var [B, dimz])`` of q(z|x)."""
        h = self.encoder(x)
        mu, raw = h[:, :self.latent_dim], h[:, self.latent_dim:]
        var = F.softplus(raw) if self.var_head == "softplus" else torch.exp(raw)
        return mu, var.clamp_min(MIN_VAR)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, dimz]`` -> the likelihood's parameters: Gaussian means ``[B, D]``, Bernoulli
        logits ``[B, D]`` or categorical logits ``[B, D, num_vals]``."""
        out = self.decoder(z)
        return out.view(len(z), self.in_dim, self.num_vals) if self.likelihood == "categorical" else out

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample ``z = mu + sqrt(var) * eps`` (``eps [B, dimz]`` standard normal, passed
        in so the caller controls the RNG) and decode.

        Returns:
            ``(decoder parameters, mu, var, z)``.
        """
        mu, var = self.encode(x)
        z = mu + var.sqrt() * eps
        return self.decode(z), mu, var, z

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean ``[B, D]`` from :meth:`decode`'s parameters (for the categorical
        one, the expected level scaled to [0, 1])."""
        if self.likelihood == "gaussian":
            return params
        if self.likelihood == "bernoulli":
            return torch.sigmoid(params)
        levels = torch.linspace(0, 1, self.num_vals, device=params.device, dtype=params.dtype)
        return (params.softmax(-1) * levels).sum(-1)

    def sample(self, params: torch.Tensor, var_x: float, generator: torch.Generator) -> torch.Tensor:
        """One draw ``[B, D]`` from p(x|z) given :meth:`decode`'s parameters (CPU generator; the
        Gaussian adds ``N(0, var_x)``, the categorical returns its level scaled to [0, 1])."""
        if self.likelihood == "gaussian":
            noise = torch.randn(params.shape, generator=generator).to(params.device)
            return params + math.sqrt(var_x) * noise
        if self.likelihood == "bernoulli":
            u = torch.rand(params.shape, generator=generator).to(params.device)
            return (u < torch.sigmoid(params)).to(params.dtype)
        probs = params.softmax(-1).reshape(-1, self.num_vals).cpu().float()
        draw = torch.multinomial(probs, 1, generator=generator).view(params.shape[:-1])
        return (draw.to(params.device, params.dtype)) / (self.num_vals - 1)


def kl_standard_normal(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(N(mu, diag var) || N(0, I)) = -1/2 sum_j (1 + ln var_j - mu_j² - var_j)``
    in nats, ``[B]``."""
    return -0.5 * (1.0 + var.log() - mu.square() - var).sum(dim=1)


def recon_nll(model: DenseVAE, params: torch.Tensor, x: torch.Tensor, var_x: float) -> torch.Tensor:
    """Per-sample ``-log p(x|z)`` in nats, ``[B]``, summed over the ``D`` elements.

    * gaussian: ``||x - mu||² / (2 var_x) + (D/2) ln(2 pi var_x)`` (``../shared/specs/gmm_vae.md`` §2);
    * bernoulli: binary cross-entropy with logits (``x`` in [0, 1]);
    * categorical: cross-entropy of the level ``round(x * (num_vals - 1))`` (``x`` in [0, 1]).
    """
    if model.likelihood == "gaussian":
        d = x.shape[1]
        return (x - params).square().sum(1) / (2 * var_x) + 0.5 * d * math.log(2 * math.pi * var_x)
    if model.likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(1)
    target = (x.clamp(0, 1) * (model.num_vals - 1)).round().long()
    return F.cross_entropy(params.reshape(-1, model.num_vals), target.reshape(-1),
                           reduction="none").view(x.shape).sum(1)


def neg_elbo_terms(model: DenseVAE, x: torch.Tensor, eps: torch.Tensor, var_x: float
                   ) -> dict[str, torch.Tensor]:
    """One forward pass and the per-sample terms of the negative ELBO.

    Args:
        model: the VAE. x: ``[B, D]`` data. eps: ``[B, dimz]`` standard normal noise.
        var_x: the Gaussian likelihood's fixed variance (ignored by the others).

    Returns:
        ``recon`` (``-log p(x|z)``, nats ``[B]``), ``kl`` (nats ``[B]``), ``mse`` (per-element
        squared error of the likelihood's mean, ``[B]``), ``mu``, ``var`` (``[B, dimz]``).
    """
    params, mu, var, _ = model(x, eps)
    mean = model.mean(params)
    return {"recon": recon_nll(model, params, x, var_x), "kl": kl_standard_normal(mu, var),
            "mse": (x - mean).square().mean(1), "mu": mu, "var": var}


def training_loss(terms: dict[str, torch.Tensor], loss: Literal["elbo", "gaussian_elbo", "mse_kl"],
                  beta: float = 1.0) -> torch.Tensor:
    """The batch's training loss: the mean over samples of ``recon + beta * KL``
    (``elbo``, alias ``gaussian_elbo``: the negative ELBO of the model's likelihood for
    beta = 1), or of the per-element MSE plus
    ``beta * KL`` (``mse_kl``, the scale of the GMM report's logged loss; spec §2).

    Raises:
        ValueError: an unknown ``loss``.
    """
    if loss in ("elbo", "gaussian_elbo"):
        return (terms["recon"] + beta * terms["kl"]).mean()
    if loss == "mse_kl":
        return (terms["mse"] + beta * terms["kl"]).mean()
    raise ValueError(f"loss must be elbo, gaussian_elbo or mse_kl, not {loss!r}")
