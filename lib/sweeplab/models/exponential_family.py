"""Closed forms of the exponential-family pieces of the conjugated mixture model.

The distributions ``shared/specs/variational_mnist.md`` builds its model from, as plain
functions on tensors so tests can check each against brute-force enumeration: independent
``Binomial(n, σ(η))`` pixels (log-partition, base measure), product-Bernoulli latents
(log-probability, KL, sampling), categorical cluster weights (KL, entropy), a mixture of
product-Bernoullis (log-weights, exact KL between two), and the score-function (REINFORCE)
gradient term of a Monte-Carlo expectation with its baselines. The model itself is
:class:`sweeplab.models.variational_mnist.ConjugatedMixture`.

Shapes: ``B`` batch, ``D`` pixels, ``L`` latents, ``K`` clusters, ``S`` Monte-Carlo samples.
All log-probabilities, KLs and entropies are in nats.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

ScoreBaseline = Literal["leave_one_out", "mean"]

__all__ = ["binomial_log_partition", "binomial_log_base_measure", "bernoulli_log_prob_logits",
           "bernoulli_kl_logits", "bernoulli_sample", "categorical_kl", "categorical_entropy",
           "mixture_log_weights", "kl_posterior_prior", "score_function_surrogate"]


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


def score_function_surrogate(score: Tensor, log_prob: Tensor, baseline: ScoreBaseline = "leave_one_out") -> Tensor:
    """The surrogate ``s = mean_s[(g_s − b_s) · log q(z_s)]`` of the score-function (REINFORCE)
    gradient of ``E_q[g]`` from ``S`` samples per row (Williams 1992).

    Added to a sample mean of ``g`` as ``mean + s − s.detach()``, it leaves the value unchanged
    and adds the gradient that reaches ``q``'s parameters through the sampling. The baseline
    ``b_s``:

    * ``"leave_one_out"``: the mean of the other ``S − 1`` samples (an unbiased gradient);
    * ``"mean"``: the mean of all ``S`` samples (the spec's wording; its gradient is ``(S−1)/S``
      times the unbiased one);
    * none when ``S = 1``.

    Args:
        score: ``[B, S]`` the sampled values ``g_s`` (no gradient is taken through them).
        log_prob: ``[B, S]`` ``log q(z_s)``, differentiable in ``q``'s parameters.
        baseline: ``"leave_one_out"`` or ``"mean"``.

    Returns:
        ``[B]`` surrogate (its value is not an estimate of anything; only its gradient is used).
    """
    score = score.detach()
    S = score.shape[1]
    if S == 1:
        base = torch.zeros_like(score)
    elif baseline == "leave_one_out":
        base = (score.sum(1, keepdim=True) - score) / (S - 1)
    else:
        base = score.mean(1, keepdim=True)
    return ((score - base) * log_prob).mean(1)
