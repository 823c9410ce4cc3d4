"""The conjugated mixture model ("variational MNIST") of ``shared/specs/variational_mnist.md``.

A hierarchical latent-variable model for clustering count images, after S. Sokoloski's
conjugated harmoniums:

* latents ``y ∈ {0,1}^L`` (Bernoulli) and a cluster ``k ∈ {0..K-1}``;
* prior ``p(y, k) ∝ exp(θ_Y·y + Θ_{Y,k}·y + θ_{K,k})`` with ``Θ_{Y,0} = 0``, ``θ_{K,0} = 0``;
* likelihood: every pixel ``Binomial(n, σ(η))`` (``n = 16`` levels for MNIST) with
  ``η(y, k) = θ_X + b_k + (W + W_k) y`` (``b_0 = 0``, ``W_0 = 0``; ``interaction="hierarchical"``
  drops ``b_k`` and ``W_k``);
* approximate posterior of the same family as the prior, shifted by ``ρ``:
  ``u_k(x) = θ_Y + Wᵀx − ρ + Θ_{Y,k} + W_kᵀx``,
  ``q(k|x) = softmax_k(θ_{K,k} + b_k·x + Σ_j softplus(u_k)_j)``, ``q(y|k,x) = Bernoulli(σ(u_k))``.

With ``f(y, k) = ρ·y − ψ_X(η(y, k))``, ``log p(x, y, k) − log q(y, k|x) = f(y, k) + c(x)``, so
``q`` is the exact posterior when ``f`` is constant ("conjugation").

The closed forms are module-level functions (``binomial_log_partition``,
``bernoulli_kl_logits``, ``categorical_kl``, ``kl_posterior_prior`` ...) so tests can check them
against brute-force enumeration. Shapes: ``B`` batch, ``D`` pixels, ``L`` latents, ``K``
clusters, ``S`` Monte-Carlo samples. All log-probabilities, KLs, entropies and ELBOs are in nats.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Interaction = Literal["full", "hierarchical"]
Mode = Literal["gradient", "analytical"]
ScoreBaseline = Literal["leave_one_out", "mean"]
ControlVariate = Literal["none", "conjugation"]


# ------------------------------------------------------------------------------------------------
# Closed forms (exponential-family pieces)
# ------------------------------------------------------------------------------------------------
def binomial_log_partition(eta: Tensor, n_trials: int) -> Tensor:
    """Log-partition ``ψ_X(η) = n Σ_i softplus(η_i)`` of independent ``Binomial(n, σ(η_i))`` pixels.

    Args:
        eta: natural parameters ``[..., D]`` (logits of the per-trial success probability).
        n_trials: trials per pixel ``n`` (16 grey levels in the spec).

    Returns:
        ``[...]`` log-partition in nats. Source: ``shared/specs/variational_mnist.md``.
    """
    return n_trials * F.softplus(eta).sum(-1)


def binomial_log_base_measure(x: Tensor, n_trials: int) -> Tensor:
    """Log base measure ``log h(x) = Σ_i log C(n, x_i)`` of Binomial pixels.

    Args:
        x: counts ``[..., D]`` with values in ``0..n`` (any float or integer dtype; floats are
            rounded to the nearest count).
        n_trials: trials per pixel ``n``.

    Returns:
        ``[...]`` in nats (a table lookup of the ``n + 1`` values).

    Raises:
        ValueError: for a count outside ``0..n``.
    """
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    levels = torch.arange(n_trials + 1, dtype=torch.float64, device=x.device)
    table = (math.lgamma(n_trials + 1) - torch.lgamma(levels + 1) - torch.lgamma(n_trials - levels + 1))
    counts = x.round().long() if x.is_floating_point() else x.long()
    if counts.numel() and (counts.min() < 0 or counts.max() > n_trials):
        raise ValueError(f"counts must lie in 0..{n_trials}")
    return table.to(dtype)[counts].sum(-1)


def bernoulli_log_prob_logits(y: Tensor, logits: Tensor) -> Tensor:
    """Elementwise ``log Bernoulli(y; σ(logits)) = y·logits − softplus(logits)`` (no sum).

    Args:
        y: ``{0, 1}`` values, broadcastable with ``logits``.
        logits: natural parameters.
    """
    return y * logits - F.softplus(logits)


def bernoulli_kl_logits(q_logits: Tensor, p_logits: Tensor, q_softplus: Tensor | None = None) -> Tensor:
    """Elementwise ``KL(Bernoulli(σ(a)) ‖ Bernoulli(σ(c))) = σ(a)(a − c) − softplus(a) + softplus(c)``.

    Args:
        q_logits: ``a``, logits of the first (approximate posterior) Bernoulli.
        p_logits: ``c``, logits of the second (prior) Bernoulli, broadcastable with ``a``.
        q_softplus: ``softplus(a)`` if already computed (saves one pass over a large ``a``).

    Returns:
        KL in nats, elementwise (no sum).
    """
    sp_a = F.softplus(q_logits) if q_softplus is None else q_softplus
    return torch.sigmoid(q_logits) * (q_logits - p_logits) - sp_a + F.softplus(p_logits)


def bernoulli_sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``y ~ Bernoulli(σ(logits))`` elementwise as ``1[U < σ(logits)]``, ``U ~ Uniform(0, 1)``
    (faster on CPU than ``torch.bernoulli``). No gradient; returns floats in {0, 1}."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    return (u < torch.sigmoid(logits.detach())).to(logits.dtype)


def categorical_kl(log_q: Tensor, log_p: Tensor) -> Tensor:
    """``KL(q ‖ p) = Σ_k q_k (log q_k − log p_k)`` over the last axis, from normalised log-probs.

    Args:
        log_q: ``[..., K]`` normalised log-probabilities of ``q``.
        log_p: ``[..., K]`` (broadcastable) normalised log-probabilities of ``p``.

    Returns:
        ``[...]`` KL in nats.
    """
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def categorical_entropy(log_p: Tensor) -> Tensor:
    """``H[p] = −Σ_k p_k log p_k`` over the last axis, from normalised log-probs (nats)."""
    return -(log_p.exp() * log_p).sum(-1)


def mixture_log_weights(cluster_bias: Tensor, logits: Tensor, softplus_logits: Tensor | None = None) -> Tensor:
    """Log-weights of a mixture of product-Bernoullis ``∝ exp(a_k·y + c_k)`` after summing out ``y``.

    ``log p(k) = log_softmax_k(c_k + Σ_j softplus(a_{k,j}))`` — used for both the prior
    (``a_k = θ_Y + Θ_{Y,k}``, ``c_k = θ_{K,k}``) and the posterior (``a_k = u_k(x)``,
    ``c_k = θ_{K,k} + b_k·x``).

    Args:
        cluster_bias: ``c``, ``[..., K]``.
        logits: ``a``, ``[..., K, L]``.
        softplus_logits: ``softplus(a)`` if already computed.

    Returns:
        ``[..., K]`` normalised log-probabilities.
    """
    sp = F.softplus(logits) if softplus_logits is None else softplus_logits
    return torch.log_softmax(cluster_bias + sp.sum(-1), dim=-1)


def kl_posterior_prior(log_qk: Tensor, q_logits: Tensor, log_pk: Tensor, p_logits: Tensor,
                       q_softplus: Tensor | None = None) -> Tensor:
    """Exact ``KL(q(y,k|x) ‖ p(y,k))`` of two mixtures of product-Bernoullis.

    ``KL = KL(q(k)‖p(k)) + Σ_k q(k) Σ_j KL_Bernoulli(σ(u_k)_j ‖ σ(θ_Y + Θ_{Y,k})_j)``
    (``shared/specs/variational_mnist.md``).

    Args:
        log_qk: ``[B, K]`` normalised ``log q(k|x)``.
        q_logits: ``[B, K, L]`` posterior logits ``u_k(x)``.
        log_pk: ``[K]`` normalised ``log p(k)``.
        p_logits: ``[K, L]`` prior logits ``θ_Y + Θ_{Y,k}``.
        q_softplus: ``softplus(u)`` if already computed.

    Returns:
        ``[B]`` KL in nats.
    """
    bern = bernoulli_kl_logits(q_logits, p_logits, q_softplus).sum(-1)  # [B, K]
    return categorical_kl(log_qk, log_pk) + (log_qk.exp() * bern).sum(-1)


@dataclasses.dataclass
class Posterior:
    """The approximate posterior ``q(y, k | x)`` of a batch.

    Attributes:
        logits: ``[B, K, L]`` ``u_k(x)``, logits of ``q(y|k, x)``.
        log_qk: ``[B, K]`` normalised ``log q(k|x)``.
        xw: ``[B, K, L]`` ``(W + W_k)ᵀx`` (reused by ``E_q[x·η]``).
        xb: ``[B, K]`` ``b_k·x`` (zeros for ``hierarchical``).
        softplus_logits: ``[B, K, L]`` ``softplus(u_k(x))`` (shared by ``q(k|x)`` and the KL).
    """

    logits: Tensor
    log_qk: Tensor
    xw: Tensor
    xb: Tensor
    softplus_logits: Tensor


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------
class ConjugatedMixture(nn.Module):
    """Mixture of product-Bernoulli latents with a Binomial pixel likelihood and a conjugated
    approximate posterior (``shared/specs/variational_mnist.md``).

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
        score_baseline: baseline of the score-function gradient of ``E_q[ψ_X(η)]``:
            ``"leave_one_out"`` (mean of the other ``S − 1`` samples: an unbiased gradient) or
            ``"mean"`` (mean of all ``S`` samples, as written in the spec; its gradient is
            ``(S−1)/S`` times the unbiased one). The value of the estimate is the same.
        control_variate: ``"none"`` (the spec) or ``"conjugation"``: use the conjugation's own
            linear approximation ``ψ_X(η(y, k)) ≈ ρ·y + c`` as a control variate of
            ``E_q[ψ_X(η)]``. ``E_q[ρ·y] = ρ·Σ_k q_k σ(u_k)`` is analytic, so only the residual
            ``ψ_X − ρ·y`` (``−f`` up to a constant) is left to the score-function term, whose
            variance then falls roughly by ``1 − R²`` (``ρ`` enters as a constant: it gets no
            gradient from the control variate). Still unbiased, in value and gradient; a linear
            control variate in the spirit of MuProp (Gu et al. 2016, arXiv:1511.05176). Beyond
            the spec and the runs.

    Raises:
        ValueError: for a non-positive size or an unknown option.
    """

    def __init__(self, n_pixels: int, n_latent: int, n_clusters: int, *,
                 interaction: Interaction = "full", mode: Mode = "gradient", n_trials: int = 16,
                 score_baseline: ScoreBaseline = "leave_one_out",
                 control_variate: ControlVariate = "none") -> None:
        super().__init__()
        if min(n_pixels, n_latent, n_clusters, n_trials) < 1:
            raise ValueError("n_pixels, n_latent, n_clusters and n_trials must be >= 1")
        if interaction not in ("full", "hierarchical"):
            raise ValueError(f"interaction must be 'full' or 'hierarchical', got {interaction!r}")
        if mode not in ("gradient", "analytical"):
            raise ValueError(f"mode must be 'gradient' or 'analytical', got {mode!r}")
        if score_baseline not in ("leave_one_out", "mean"):
            raise ValueError(f"score_baseline must be 'leave_one_out' or 'mean', got {score_baseline!r}")
        if control_variate not in ("none", "conjugation"):
            raise ValueError(f"control_variate must be 'none' or 'conjugation', got {control_variate!r}")
        D, L, K = n_pixels, n_latent, n_clusters
        self.n_pixels, self.n_latent, self.n_clusters = D, L, K
        self.interaction, self.mode, self.n_trials = interaction, mode, n_trials
        self.score_baseline = score_baseline
        self.control_variate = control_variate
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

    # -- posterior -----------------------------------------------------------------------------
    def posterior(self, x: Tensor) -> Posterior:
        """The approximate posterior of a batch.

        ``u_k(x) = θ_Y + Wᵀx − ρ + Θ_{Y,k} + W_kᵀx``,
        ``q(k|x) = softmax_k(θ_{K,k} + b_k·x + Σ_j softplus(u_k)_j)``.

        Args:
            x: ``[B, D]`` float counts in ``0..n`` (no gradient needed).

        Returns:
            A :class:`Posterior`.
        """
        B, K, L = x.shape[0], self.n_clusters, self.n_latent
        xw0 = x @ self.w  # [B, L]
        if self.interaction == "full":
            xwk = (x @ self.w_k.reshape(self.n_pixels, (K - 1) * L)).view(B, K - 1, L)
            xw = torch.cat([xw0[:, None], xw0[:, None] + xwk], 1)
            xb = torch.cat([x.new_zeros(B, 1), x @ self.b.T], 1)
        else:
            xw = xw0[:, None].expand(B, K, L)
            xb = x.new_zeros(B, K)
        logits = self.theta_y - self.rho + self._with_reference(self.theta_y_k) + xw
        sp = F.softplus(logits)
        log_qk = mixture_log_weights(self.cluster_bias() + xb, logits, sp)
        return Posterior(logits=logits, log_qk=log_qk, xw=xw, xb=xb, softplus_logits=sp)

    def expected_x_dot_eta(self, x: Tensor, post: Posterior) -> Tensor:
        """Analytic ``E_q[x·η(y, k)] = x·θ_X + Σ_k q_k (b_k·x + ((W + W_k)ᵀx)·σ(u_k))``.

        Args:
            x: ``[B, D]``; post: the batch's :class:`Posterior`.

        Returns:
            ``[B]`` in nats.
        """
        inner = post.xb + (post.xw * torch.sigmoid(post.logits)).sum(-1)  # [B, K]
        return x @ self.theta_x + (post.log_qk.exp() * inner).sum(-1)

    def expected_latents(self, post: Posterior) -> Tensor:
        """Analytic ``E_q[y] = Σ_k q_k σ(u_k)``, ``[B, L]`` (probabilities)."""
        return (post.log_qk.exp()[:, :, None] * torch.sigmoid(post.logits)).sum(1)

    def expected_eta(self, post: Posterior) -> Tensor:
        """Analytic ``E_q[η] = θ_X + Σ_k q_k (b_k + (W + W_k) σ(u_k))``, ``[B, D]`` (diagnostics;
        the training path uses the cheaper :meth:`expected_x_dot_eta`)."""
        qk = post.log_qk.exp()
        mean_y = torch.sigmoid(post.logits)  # [B, K, L]
        out = self.theta_x + self.expected_latents(post) @ self.w.T
        if self.interaction == "full":
            out = out + qk[:, 1:] @ self.b
            weighted = (qk[:, 1:, None] * mean_y[:, 1:]).reshape(qk.shape[0], -1)  # [B, (K-1)L]
            out = out + weighted @ self.w_k.reshape(self.n_pixels, -1).T
        return out

    @torch.no_grad()
    def sample_posterior(self, post: Posterior, n_samples: int,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``S`` samples ``(k, y) ~ q(y, k|x)`` per row (no gradient).

        Returns:
            ``y`` ``[B, S, L]`` float in {0, 1} and ``k`` ``[B, S]`` int64.
        """
        k = torch.multinomial(post.log_qk.exp(), n_samples, replacement=True, generator=generator)
        logits = post.logits.gather(1, k[:, :, None].expand(-1, -1, self.n_latent))
        y = bernoulli_sample(logits, generator)
        return y, k

    def posterior_log_prob(self, post: Posterior, y: Tensor, k: Tensor) -> Tensor:
        """``log q(y, k|x)`` of given samples ``y`` ``[B, S, L]``, ``k`` ``[B, S]``: ``[B, S]``
        (differentiable in the posterior's parameters)."""
        logits = post.logits.gather(1, k[:, :, None].expand(-1, -1, self.n_latent))
        return post.log_qk.gather(1, k) + bernoulli_log_prob_logits(y, logits).sum(-1)

    def expected_log_partition(self, post: Posterior, n_samples: int,
                               generator: torch.Generator | None = None) -> Tensor:
        """Monte-Carlo ``E_q[ψ_X(η)]`` from ``S`` samples of ``(k, y)`` per row.

        The value is the plain sample mean (unbiased). Its gradient is pathwise in η's
        parameters plus the score-function (REINFORCE) term ``(ψ_s − baseline_s)·∇log q(z_s|x)``,
        added as ``surrogate − surrogate.detach()`` so the value is unchanged. With
        ``control_variate="conjugation"`` the value is ``mean_s[ψ_s − ρ·y_s] + ρ·E_q[y]`` (still
        unbiased) and the score-function term uses ``ψ_s − ρ·y_s`` in place of ``ψ_s``.

        Args:
            post: the batch's :class:`Posterior`.
            n_samples: ``S`` (≥ 1; a baseline needs ``S ≥ 2``).
            generator: torch RNG of the draws.

        Returns:
            ``[B]`` in nats.
        """
        B, S = post.log_qk.shape[0], n_samples
        y, k = self.sample_posterior(post, S, generator)
        psi = self.log_partition(y.reshape(B * S, -1), k.reshape(-1)).view(B, S)
        value, score = psi.mean(1), psi.detach()
        if self.control_variate == "conjugation":
            rho = self.rho.detach()
            linear = y @ rho  # [B, S]
            value = value + self.expected_latents(post) @ rho - linear.mean(1)
            score = score - linear
        if S == 1:
            baseline = torch.zeros_like(score)
        elif self.score_baseline == "leave_one_out":
            baseline = (score.sum(1, keepdim=True) - score) / (S - 1)
        else:
            baseline = score.mean(1, keepdim=True)
        surrogate = ((score - baseline) * self.posterior_log_prob(post, y, k)).mean(1)
        return value + surrogate - surrogate.detach()

    def elbo(self, x: Tensor, n_samples: int = 10, generator: torch.Generator | None = None,
             post: Posterior | None = None) -> dict[str, Tensor]:
        """Per-row ELBO ``E_q log p(x|y,k) − KL(q(y,k|x) ‖ p(y,k))`` and its parts.

        ``E_q log p(x|y,k) = E_q[x·η] + log h(x) − E_q[ψ_X(η)]``: the first term analytic, the
        last a Monte-Carlo estimate (:meth:`expected_log_partition`), so the ELBO is an unbiased
        estimate with gradients.

        Args:
            x: ``[B, D]`` float counts; n_samples: ``S``; generator: RNG of the draws;
            post: a precomputed posterior of ``x`` (computed when ``None``).

        Returns:
            ``elbo``, ``expected_log_likelihood``, ``kl`` (each ``[B]``, nats), ``log_qk``
            ``[B, K]`` and ``log_pk`` ``[K]``.
        """
        post = self.posterior(x) if post is None else post
        log_pk = self.prior_log_pk()
        kl = kl_posterior_prior(post.log_qk, post.logits, log_pk, self.prior_logits(), post.softplus_logits)
        exp_ll = (self.expected_x_dot_eta(x, post) + binomial_log_base_measure(x, self.n_trials)
                  - self.expected_log_partition(post, n_samples, generator))
        return {"elbo": exp_ll - kl, "expected_log_likelihood": exp_ll, "kl": kl,
                "log_qk": post.log_qk, "log_pk": log_pk}

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

    # -- objective -----------------------------------------------------------------------------
    def loss(self, x: Tensor, *, beta: float, entropy_weight: float = 5.0,
             posterior_entropy_weight: float = 10.0, conj_weight: float = 0.1,
             n_samples: int = 10, prior_samples: int = 1024,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """The training objective of the spec for one batch.

        ``loss = −mean_x[E_q log p(x|y,k) − β·KL] − w_ent·H[p(k)] − w_post·H[mean_x q(k|x)]
        + β·w_conj·Var_p[f]``. In ``analytical`` mode ``ρ`` is refitted first (:meth:`fit_rho`).

        Args:
            x: ``[B, D]`` float counts; beta: KL / conjugation weight ``β`` in [0, 1];
            entropy_weight: ``w_ent``; posterior_entropy_weight: ``w_post``;
            conj_weight: ``w_conj``; n_samples: ``S``; prior_samples: draws of the penalty;
            generator: RNG of all draws.

        Returns:
            The scalar loss and floats ``elbo`` (batch mean at β = 1, nats), ``kl``,
            ``prior_entropy``, ``posterior_entropy``, ``conj_var``.
        """
        if self.mode == "analytical":
            self.fit_rho(generator=generator)
        out = self.elbo(x, n_samples, generator)
        exp_ll, kl = out["expected_log_likelihood"].mean(), out["kl"].mean()
        h_prior = categorical_entropy(out["log_pk"])
        mean_qk = out["log_qk"].exp().mean(0)
        h_post = -(mean_qk * torch.log(mean_qk.clamp_min(1e-30))).sum()
        loss = -(exp_ll - beta * kl) - entropy_weight * h_prior - posterior_entropy_weight * h_post
        conj_var = torch.zeros(())
        if conj_weight and beta:
            conj_var = self.conjugation_variance(prior_samples, generator)
            loss = loss + beta * conj_weight * conj_var
        stats = {"elbo": float((exp_ll - kl).detach()), "kl": float(kl.detach()),
                 "prior_entropy": float(h_prior.detach()), "posterior_entropy": float(h_post.detach()),
                 "conj_var": float(conj_var.detach())}
        return loss, stats
