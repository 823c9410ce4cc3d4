"""The generative side of the conjugated mixture model of ``shared/specs/variational_mnist.md``:
its parameters, the spec's initialisation, the prior ``p(y, k)``, the Binomial pixel likelihood
``p(x | y, k)`` and the conjugation residual ``f(y, k) = ρ·y − ψ_X(η(y, k))`` (its variance
penalty, the R² samples, and the least-squares ``ρ`` of ``mode="analytical"``).

* latents ``y ∈ {0,1}^L`` (Bernoulli) and a cluster ``k ∈ {0..K-1}``;
* prior ``p(y, k) ∝ exp(θ_Y·y + Θ_{Y,k}·y + θ_{K,k})`` with ``Θ_{Y,0} = 0``, ``θ_{K,0} = 0``;
* likelihood: every pixel ``Binomial(n, σ(η))`` (``n = 16`` levels for MNIST) with
  ``η(y, k) = θ_X + b_k + (W + W_k) y`` (``b_0 = 0``, ``W_0 = 0``; ``interaction="hierarchical"``
  drops ``b_k`` and ``W_k``).

The approximate posterior, the ELBO and the training objective are added by
:class:`sweeplab.models.variational_mnist.ConjugatedMixture`; the closed forms are in
:mod:`sweeplab.models.exponential_family`. Shapes: ``N`` rows, ``D`` pixels, ``L`` latents,
``K`` clusters. Log-probabilities and log-partitions are in nats.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from sweeplab.models.exponential_family import (bernoulli_sample, binomial_log_base_measure,
                                                binomial_log_partition, mixture_log_weights)

Interaction = Literal["full", "hierarchical"]
Mode = Literal["gradient", "analytical"]


class BinomialMixture(nn.Module):
    """Mixture of product-Bernoulli latents with a Binomial pixel likelihood, and the ``ρ`` of
    its conjugation (``shared/specs/variational_mnist.md``).

    Parameters (``D`` pixels, ``L`` latents, ``K`` clusters; cluster 0 is the reference whose
    offsets are fixed at zero, so the ``*_k`` tensors hold clusters ``1..K-1``):

    * ``theta_x`` ``[D]``; ``w`` ``[D, L]``; ``b`` ``[K-1, D]`` and ``w_k`` ``[D, K-1, L]``
      (``W_k = w_k[:, k-1, :]``; ``full`` only);
    * ``theta_y`` ``[L]``; ``theta_y_k`` ``[K-1, L]`` (``Θ_Y``); ``theta_k`` ``[K-1]``;
    * ``rho`` ``[L]``: a parameter for ``mode="gradient"``, a buffer refitted by least squares
      (:meth:`fit_rho`) for ``mode="analytical"``.

    Args:
        n_pixels: ``D``.
        n_latent: ``L``.
        n_clusters: ``K`` (≥ 1).
        interaction: ``"full"`` (cluster-specific ``b_k``, ``W_k``) or ``"hierarchical"``.
        mode: ``"gradient"`` or ``"analytical"`` (how ``ρ`` is set).
        n_trials: Binomial trials per pixel (16).

    Raises:
        ValueError: for a non-positive size or an unknown option.
    """

    def __init__(self, n_pixels: int, n_latent: int, n_clusters: int, *,
                 interaction: Interaction = "full", mode: Mode = "gradient", n_trials: int = 16) -> None:
        super().__init__()
        if min(n_pixels, n_latent, n_clusters, n_trials) < 1:
            raise ValueError("n_pixels, n_latent, n_clusters and n_trials must be >= 1")
        if interaction not in ("full", "hierarchical"):
            raise ValueError(f"interaction must be 'full' or 'hierarchical', got {interaction!r}")
        if mode not in ("gradient", "analytical"):
            raise ValueError(f"mode must be 'gradient' or 'analytical', got {mode!r}")
        D, L, K = n_pixels, n_latent, n_clusters
        self.n_pixels, self.n_latent, self.n_clusters = D, L, K
        self.interaction, self.mode, self.n_trials = interaction, mode, n_trials
        self.theta_x = nn.Parameter(torch.zeros(D))
        self.w = nn.Parameter(torch.zeros(D, L))
        if interaction == "full":
            self.b = nn.Parameter(torch.zeros(K - 1, D))
            self.w_k = nn.Parameter(torch.zeros(D, K - 1, L))
        else:
            self.register_parameter("b", None)
            self.register_parameter("w_k", None)
        self.theta_y = nn.Parameter(torch.zeros(L))
        self.theta_y_k = nn.Parameter(torch.zeros(K - 1, L))
        self.theta_k = nn.Parameter(torch.zeros(K - 1))
        if mode == "gradient":
            self.rho = nn.Parameter(torch.zeros(L))
        else:
            self.register_buffer("rho", torch.zeros(L))

    # -- initialisation ------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, pixel_mean: Tensor | None = None,
                         generator: torch.Generator | None = None) -> None:
        """Initialise exactly as the spec says.

        ``ρ = 0``; ``θ_X = logit(0.99·p̄ + 0.005) + N(0, 0.1²)``; ``θ_Y, θ_K ~ N(0, 0.1²)``;
        ``Θ_Y ~ N(0, 0.5²)``; ``W ~ N(0, (0.1/√(D·(L·K + K − 1)))²)``;
        ``W_k ~ N(0, (0.1/√(D·L))²)``; ``b_k ~ N(0, (0.1/√D)²)`` (``D = 784`` for MNIST).

        Args:
            pixel_mean: ``[D]`` per-pixel training mean of ``x / n_trials`` (``p̄``, in [0, 1]);
                ``None`` means 0.5 everywhere.
            generator: torch RNG for reproducible draws.
        """
        D, L, K = self.n_pixels, self.n_latent, self.n_clusters

        def normal(*shape: int, std: float) -> Tensor:
            return torch.randn(*shape, generator=generator) * std

        p = torch.full((D,), 0.5) if pixel_mean is None else pixel_mean.detach().float().cpu()
        self.rho.zero_()
        self.theta_x.copy_(torch.logit(0.99 * p + 0.005) + normal(D, std=0.1))
        self.theta_y.copy_(normal(L, std=0.1))
        self.theta_k.copy_(normal(K - 1, std=0.1))
        self.theta_y_k.copy_(normal(K - 1, L, std=0.5))
        self.w.copy_(normal(D, L, std=0.1 / math.sqrt(D * (L * K + K - 1))))
        if self.interaction == "full":
            self.w_k.copy_(normal(D, K - 1, L, std=0.1 / math.sqrt(D * L)))
            self.b.copy_(normal(K - 1, D, std=0.1 / math.sqrt(D)))

    # -- prior ---------------------------------------------------------------------------------
    def _with_reference(self, offsets: Tensor) -> Tensor:
        """Prepend the zero row of reference cluster 0: ``[K-1, ...] -> [K, ...]``."""
        return torch.cat([offsets.new_zeros((1, *offsets.shape[1:])), offsets], 0)

    def prior_logits(self) -> Tensor:
        """``[K, L]`` logits ``θ_Y + Θ_{Y,k}`` of ``p(y|k)``."""
        return self.theta_y + self._with_reference(self.theta_y_k)

    def cluster_bias(self) -> Tensor:
        """``[K]`` ``θ_{K,k}`` with ``θ_{K,0} = 0``."""
        return self._with_reference(self.theta_k[:, None])[:, 0]

    def prior_log_pk(self) -> Tensor:
        """``[K]`` ``log p(k) = log_softmax(θ_{K,k} + Σ_j softplus(θ_Y + Θ_{Y,k})_j)``."""
        return mixture_log_weights(self.cluster_bias(), self.prior_logits())

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples ``(y, k) ~ p(y, k)`` (no gradient).

        Returns:
            ``y`` ``[n, L]`` float in {0, 1} and ``k`` ``[n]`` int64.
        """
        probs = self.prior_log_pk().exp()
        k = torch.multinomial(probs, n, replacement=True, generator=generator)
        y = bernoulli_sample(self.prior_logits()[k], generator)
        return y, k

    # -- likelihood ----------------------------------------------------------------------------
    def _grouped(self, y: Tensor, k: Tensor, fn) -> Tensor:
        """``fn(η(y, k))`` computed cluster by cluster, rows back in input order.

        Rows are grouped by cluster so each cluster's ``W + W_k`` and ``b_k`` enter one
        ``addmm``; ``fn`` (identity, or the log-partition) is applied per group, so a reduction
        such as ``ψ_X`` never materialises the whole ``[N, D]`` ``η``.
        """
        if self.interaction == "hierarchical":
            return fn(torch.addmm(self.theta_x, y, self.w.T))
        order = torch.argsort(k)
        counts = torch.bincount(k, minlength=self.n_clusters).tolist()
        chunks = y[order].split(counts)
        w_ks, b_ks = self.w_k.unbind(1), self.b.unbind(0)
        parts = [fn(torch.addmm(self.theta_x, chunks[0], self.w.T))]
        for j in range(1, self.n_clusters):
            if counts[j]:
                parts.append(fn(torch.addmm(self.theta_x + b_ks[j - 1], chunks[j], (self.w + w_ks[j - 1]).T)))
        return torch.cat(parts)[torch.argsort(order)]

    def eta(self, y: Tensor, k: Tensor) -> Tensor:
        """Natural parameters ``η(y, k) = θ_X + b_k + (W + W_k) y`` of the pixels.

        Args:
            y: ``[N, L]`` latents in {0, 1} (float).
            k: ``[N]`` int64 clusters.

        Returns:
            ``[N, D]``, rows in the order of the inputs.
        """
        return self._grouped(y, k, lambda eta: eta)

    def log_partition(self, y: Tensor, k: Tensor) -> Tensor:
        """``[N]`` ``ψ_X(η(y, k))`` in nats (see :func:`binomial_log_partition`)."""
        return self._grouped(y, k, lambda eta: binomial_log_partition(eta, self.n_trials))

    def log_likelihood(self, x: Tensor, y: Tensor, k: Tensor) -> Tensor:
        """Exact ``log p(x | y, k) = x·η + log h(x) − ψ_X(η)`` for paired rows.

        Args:
            x: ``[N, D]`` counts in ``0..n``; y: ``[N, L]``; k: ``[N]``.

        Returns:
            ``[N]`` in nats.
        """
        eta = self.eta(y, k)
        return ((x * eta).sum(-1) + binomial_log_base_measure(x, self.n_trials)
                - binomial_log_partition(eta, self.n_trials))

    def conjugation_residual(self, y: Tensor, k: Tensor) -> Tensor:
        """``[N]`` ``f(y, k) = ρ·y − ψ_X(η(y, k))``; its variance measures non-conjugacy."""
        return y @ self.rho - self.log_partition(y, k)

    # -- conjugation -----------------------------------------------------------------------------
    def conjugation_variance(self, n_samples: int = 1024,
                             generator: torch.Generator | None = None) -> Tensor:
        """``Var_{(y,k)~p}[f(y, k)]`` over ``n_samples`` prior draws (unbiased sample variance).

        The draws carry no gradient, so the result's gradient reaches ``ρ`` and η's parameters
        (``θ_X``, ``b``, ``W``, ``W_k``) only, never the prior's.

        Returns:
            Scalar, nats².
        """
        y, k = self.sample_prior(n_samples, generator)
        return self.conjugation_residual(y, k).var()

    @torch.no_grad()
    def conjugation_samples(self, n_samples: int = 10_000,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``f(y, k)`` and ``ψ_X(η(y, k))`` at ``n_samples`` prior draws (for the R² metric).

        Returns:
            Two ``[n_samples]`` tensors (nats).
        """
        y, k = self.sample_prior(n_samples, generator)
        psi = self.log_partition(y, k)
        return y @ self.rho - psi, psi

    @torch.no_grad()
    def fit_rho(self, n_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """``mode="analytical"``: set ``ρ`` to the least-squares slope of ``ψ_X(η)`` on ``[1, y]``.

        Args:
            n_samples: prior draws of the fit; default ``5·L`` (the spec).
            generator: torch RNG.

        Returns:
            The new ``ρ`` ``[L]`` (also written into the buffer).
        """
        n = 5 * self.n_latent if n_samples is None else n_samples
        y, k = self.sample_prior(n, generator)
        psi = self.log_partition(y, k)
        design = torch.cat([y.new_ones(n, 1), y], 1)
        coef = torch.linalg.lstsq(design.double(), psi.double()[:, None]).solution[:, 0]
        self.rho.copy_(coef[1:].to(self.rho.dtype))
        return self.rho
