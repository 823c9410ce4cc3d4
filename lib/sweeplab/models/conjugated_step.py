"""The training objective of the conjugated mixture model, restructured for speed on CPU.

The same mathematics as :meth:`ConjugatedMixture.elbo` plus the spec's penalties
(``shared/specs/variational_mnist.md``; the straightforward form is kept as the reference in
``tests/test_variational_mnist_step.py``, which checks that losses and gradients agree), computed
so that the work over ``[B, K, L]`` tensors is done once:

* the posterior's values (``u_k(x)``, ``σ(u)``, ``Σ_j softplus(u)``) are computed once without
  autograd; the samples are drawn from them; one :class:`PosteriorTerms` then attaches the
  gradient of every per-``(row, cluster)`` sum the objective needs (``Σ_j softplus(u)``,
  ``Σ_j σ(u)·(W + W_k)ᵀx``, ``Σ_j σ(u)(u − c)``, ``Σ_j σ(u)ρ``) and of the score-function
  term, in one hand-written backward pass over ``[B, K, L]``. The sampled ``log q(y, k|x)`` reuses
  ``Σ_j softplus(u)`` of the sampled cluster instead of a softplus over the gathered logits;
* the posterior's matmuls ``xᵀW``, ``xᵀW_k``, ``b_k·x`` skip the pixels that are zero in every
  row of the batch (a quarter of MNIST's pixels in a batch of 512): exactly the same sums;
* ``ψ_X`` of the posterior samples and of the prior samples of the conjugation penalty are one
  grouped pass (``W + W_k`` built once per cluster a step, larger matmuls);
* ``log h(x)`` can be passed in (the family computes it once per training image).

Shapes: ``B`` batch, ``D`` pixels, ``L`` latents, ``K`` clusters, ``S`` posterior samples.
Everything in nats.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from sweeplab.models.exponential_family import binomial_log_base_measure, categorical_entropy

if TYPE_CHECKING:  # pragma: no cover
    from sweeplab.models.variational_mnist import ConjugatedMixture


class PosteriorTerms(torch.autograd.Function):
    """The per-``(row, cluster)`` sums over latents the objective needs, with one hand-written
    backward pass over ``[B, K, L]``.

    Inputs with gradient: ``xw0 = Wᵀx`` ``[B, L]``, ``xwk = W_kᵀx`` ``[B, K-1, L]`` (``None`` for
    ``hierarchical``), ``a = θ_Y − ρ + Θ_{Y,k}`` ``[K, L]`` and the prior logits ``c`` ``[K, L]``;
    so ``u_k = a_k + (W + W_k)ᵀx``. ``v`` holds what the forward pass reuses (from
    :func:`posterior_values`): ``xw``, ``u``, ``σ(u)`` ``[B, K, L]``, ``Σ_j softplus(u)`` ``[B, K]``,
    and optionally ``rho_cv`` ``[L]`` (a constant: the control variate's ``ρ``) and the score
    weights ``k_index`` ``[B, S, L]`` (sampled clusters) and ``wy`` ``[B, S, L]``
    (``(score_s − baseline_s)·y_s / S``).

    Returns ``[B, K]`` tensors ``Σ_j softplus(u)``, ``Σ_j σ(u)·xw``, ``Σ_j σ(u)(u − c)``,
    ``Σ_j σ(u)·rho_cv`` (zeros without it) and a ``[B]`` zero whose gradient is that of
    ``Σ_s (score_s − baseline_s)/S · y_s·u_{k_s}`` (the logits' part of the score-function
    surrogate; its value is never used).
    """

    @staticmethod
    def forward(ctx, xw0, xwk, a, c, v: dict):  # noqa: D102
        s, xw, u = v["s"], v["xw"], v["u"]
        uc = u - c
        z = torch.einsum("bkl,bkl->bk", s, uc)
        xs = torch.einsum("bkl,bkl->bk", s, xw)
        r = s @ v["rho_cv"] if v.get("rho_cv") is not None else xs.new_zeros(xs.shape)
        ctx.save_for_backward(xw, s, uc)
        ctx.v = v
        ctx.full = xwk is not None
        return v["sp_sum"].clone(), xs, z, r, xs.new_zeros(xs.shape[0])

    @staticmethod
    def backward(ctx, g_sp, g_x, g_z, g_r, g_t):  # noqa: D102
        xw, s, uc = ctx.saved_tensors
        v = ctx.v
        t = xw * g_x[..., None]
        t.addcmul_(uc, g_z[..., None])
        if v.get("rho_cv") is not None:
            t.addcmul_(g_r[..., None], v["rho_cv"])
        t.mul_(s).addcmul_(t, s, value=-1)  # σ'(u) = σ(1 − σ)
        t.addcmul_(s, (g_sp + g_z)[..., None])  # dL/du (∂Z/∂u = σ'(u)(u − c) + σ(u))
        if v.get("wy") is not None:
            t.scatter_add_(1, v["k_index"], v["wy"] * g_t[:, None, None])
        g_a = t.sum(0)
        g_c = -torch.einsum("bk,bkl->kl", g_z, s)
        t.addcmul_(s, g_x[..., None])  # dL/dxw = dL/du + g_x σ(u)
        return t.sum(1), (t[:, 1:] if ctx.full else None), g_a, g_c, None


def posterior_values(xw0: Tensor, xwk: Tensor | None, a: Tensor) -> dict:
    """``xw = (W + W_k)ᵀx``, ``u = a + xw``, ``σ(u)`` (``[B, K, L]``) and ``Σ_j softplus(u)``
    (``[B, K]``), without autograd (:class:`PosteriorTerms` supplies the gradients).

    ``u`` is summed in the order of :meth:`ConjugatedMixture.posterior` (``a + (xw0 + xwk)``),
    so it is the same to the last bit and draws the same samples.
    """
    with torch.no_grad():
        xw0, a = xw0.detach(), a.detach()
        B, L = xw0.shape
        K = a.shape[0]
        if xwk is None:
            xw = xw0[:, None].expand(B, K, L)
        else:
            xw = torch.empty(B, K, L, dtype=xw0.dtype, device=xw0.device)
            xw[:, 0] = xw0
            torch.add(xw0[:, None], xwk.detach(), out=xw[:, 1:])
        u = xw + a
        s = torch.sigmoid(u)
        sp_sum = F.softplus(u).sum(-1)
    return {"xw": xw, "u": u, "s": s, "sp_sum": sp_sum}


def posterior_projections(m: "ConjugatedMixture", x: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
    """``Wᵀx`` ``[B, L]``, ``W_kᵀx`` ``[B, K-1, L]`` (``None`` for ``hierarchical``) and
    ``b_k·x`` ``[B, K]`` (zero for ``k = 0``), over the pixels not zero in every row only: the
    others add exact zeros to each sum, and on MNIST they are a quarter of a batch of 512's."""
    B, D = x.shape
    K, L = m.n_clusters, m.n_latent
    active = (x != 0).any(0).nonzero()[:, 0]
    if len(active) > 0.9 * D:  # not worth the gather
        xa, w, w_k, b = x, m.w, m.w_k, m.b
    else:
        xa, w = x.index_select(1, active), m.w.index_select(0, active)
        w_k = None if m.w_k is None else m.w_k.index_select(0, active)
        b = None if m.b is None else m.b.index_select(1, active)
    if m.interaction == "hierarchical":
        return xa @ w, None, x.new_zeros(B, K)
    xwk = (xa @ w_k.reshape(len(w_k), (K - 1) * L)).view(B, K - 1, L)
    return xa @ w, xwk, torch.cat([x.new_zeros(B, 1), xa @ b.T], 1)


def _score_weights(m: "ConjugatedMixture", psi: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(score_s − baseline_s) / S`` ``[B, S]`` of the score-function term (the score is ``ψ_s``,
    or ``ψ_s − ρ·y_s`` with the conjugation control variate) and the control variate's
    ``ρ·y_s`` ``[B, S]`` (``None`` without it)."""
    S = psi.shape[1]
    score, linear = psi.detach(), None
    if m.control_variate == "conjugation":
        linear = y @ m.rho.detach()
        score = score - linear
    if S == 1:
        base = torch.zeros_like(score)
    elif m.score_baseline == "leave_one_out":
        base = (score.sum(1, keepdim=True) - score) / (S - 1)
    else:
        base = score.mean(1, keepdim=True)
    return (score - base) / S, linear


def _draw(m: "ConjugatedMixture", v: dict, log_qk: Tensor, n_samples: int, prior_samples: int,
          generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The posterior samples ``k`` ``[B, S]``, ``y`` ``[B, S, L]`` from ``q`` and, when
    ``prior_samples``, the prior samples ``(y, k)`` of the penalty, in the reference's RNG order."""
    with torch.no_grad():
        B, K, L = v["s"].shape
        k = torch.multinomial(log_qk.exp(), n_samples, replacement=True, generator=generator)
        u = torch.rand((B, n_samples, L), generator=generator, dtype=log_qk.dtype, device=log_qk.device)
        y = (u < v["s"].gather(1, k[:, :, None].expand(-1, -1, L))).to(log_qk.dtype)
        yp, kp = m.sample_prior(prior_samples, generator) if prior_samples else (None, None)
    return k, y, yp, kp


def training_loss(m: "ConjugatedMixture", x: Tensor, *, beta: float, entropy_weight: float,
                  posterior_entropy_weight: float, conj_weight: float, n_samples: int,
                  prior_samples: int, generator: torch.Generator | None,
                  log_h: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """The spec's training objective of one batch (see :meth:`ConjugatedMixture.loss`, whose
    arguments these are); ``log_h`` is ``log h(x)`` ``[B]`` if precomputed. Returns the scalar
    loss and the floats ``elbo``, ``kl``, ``prior_entropy``, ``posterior_entropy``, ``conj_var``."""
    if m.mode == "analytical":
        m.fit_rho(generator=generator)
    B, S, L = x.shape[0], n_samples, m.n_latent
    c, bias = m.prior_logits(), m.cluster_bias()
    log_pk = torch.log_softmax(bias + softplus_sum(c), -1)
    a = m.theta_y - m.rho + m._with_reference(m.theta_y_k)
    xw0, xwk, xb = posterior_projections(m, x)
    v = posterior_values(xw0, xwk, a)
    with_penalty = bool(conj_weight and beta)
    with torch.no_grad():
        log_qk0 = torch.log_softmax(bias + xb + v["sp_sum"], -1)
    k, y, yp, kp = _draw(m, v, log_qk0, S, prior_samples if with_penalty else 0, generator)
    y_all, k_all = y.reshape(B * S, L), k.reshape(-1)
    psi_all = m.log_partition(torch.cat([y_all, yp]) if with_penalty else y_all,
                              torch.cat([k_all, kp]) if with_penalty else k_all)
    psi = psi_all[:B * S].view(B, S)
    weight, linear = _score_weights(m, psi, y)
    v.update(k_index=k[:, :, None].expand(-1, -1, L), wy=weight[:, :, None] * y,
             rho_cv=None if linear is None else m.rho.detach())
    sp, xs, z, r, t = PosteriorTerms.apply(xw0, xwk, a, c, v)
    log_qk = torch.log_softmax(bias + xb + sp, -1)
    qk = log_qk.exp()
    value = psi.mean(1)
    if linear is not None:
        value = value + (qk * r).sum(-1) - linear.mean(1)
    surrogate = (weight * (log_qk.gather(1, k) - sp.gather(1, k))).sum(1) + t
    log_h = binomial_log_base_measure(x, m.n_trials) if log_h is None else log_h
    exp_ll = (x @ m.theta_x + (qk * (xb + xs)).sum(-1) + log_h - (value + surrogate - surrogate.detach())).mean()
    kl = ((qk * (log_qk - log_pk)).sum(-1) + (qk * (z - sp + softplus_sum(c))).sum(-1)).mean()
    h_prior = categorical_entropy(log_pk)
    mean_qk = qk.mean(0)
    h_post = -(mean_qk * torch.log(mean_qk.clamp_min(1e-30))).sum()
    loss = -(exp_ll - beta * kl) - entropy_weight * h_prior - posterior_entropy_weight * h_post
    conj_var = torch.zeros(())
    if with_penalty:
        conj_var = (yp @ m.rho - psi_all[B * S:]).var()
        loss = loss + beta * conj_weight * conj_var
    stats = {"elbo": float((exp_ll - kl).detach()), "kl": float(kl.detach()),
             "prior_entropy": float(h_prior.detach()), "posterior_entropy": float(h_post.detach()),
             "conj_var": float(conj_var.detach())}
    return loss, stats


def softplus_sum(c: Tensor) -> Tensor:
    """``Σ_j softplus(c)_j`` over the last axis, with autograd (small tensors: the prior's ``[K, L]``)."""
    return F.softplus(c).sum(-1)
