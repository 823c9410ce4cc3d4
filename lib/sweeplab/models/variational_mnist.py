"""The conjugated mixture model ("variational MNIST") of ``shared/specs/variational_mnist.md``.

A hierarchical latent-variable model for clustering count images, after S. Sokoloski's
conjugated harmoniums. The generative model (Bernoulli latents ``y``, a cluster ``k``, Binomial
pixels with natural parameters ``η(y, k)``) is :class:`sweeplab.models.binomial_mixture.BinomialMixture`;
this module adds the inference side:

* approximate posterior of the same family as the prior, shifted by ``ρ``:
  ``u_k(x) = θ_Y + Wᵀx − ρ + Θ_{Y,k} + W_kᵀx``,
  ``q(k|x) = softmax_k(θ_{K,k} + b_k·x + Σ_j softplus(u_k)_j)``, ``q(y|k,x) = Bernoulli(σ(u_k))``.

With ``f(y, k) = ρ·y − ψ_X(η(y, k))``, ``log p(x, y, k) − log q(y, k|x) = f(y, k) + c(x)``, so
``q`` is the exact posterior when ``f`` is constant ("conjugation").

It holds the posterior, its analytic expectations and samples, the Monte-Carlo ELBO with its
score-function gradient, and the spec's training objective. The closed forms
(``binomial_log_partition``, ``bernoulli_kl_logits``, ``kl_posterior_prior`` ...) live in
:mod:`sweeplab.models.exponential_family`. Shapes: ``B`` batch, ``D`` pixels,
``L`` latents, ``K`` clusters, ``S`` Monte-Carlo samples. All log-probabilities, KLs, entropies
and ELBOs are in nats. No training loop lives here (see ``sweeplab.families.variational_mnist``).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from sweeplab.models.binomial_mixture import BinomialMixture, Interaction, Mode
from sweeplab.models.conjugated_step import training_loss
from sweeplab.models.exponential_family import (ScoreBaseline, bernoulli_log_prob_logits,
                                                bernoulli_sample, binomial_log_base_measure,
                                                kl_posterior_prior,
                                                mixture_log_weights, score_function_surrogate)

__all__ = ["ConjugatedMixture", "Posterior", "BinomialMixture"]

ControlVariate = Literal["none", "conjugation"]


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


class ConjugatedMixture(BinomialMixture):
    """The conjugated mixture model: :class:`BinomialMixture` with its conjugated approximate
    posterior ``q(y, k | x)``, the ELBO and the training objective
    (``shared/specs/variational_mnist.md``).

    Args:
        n_pixels, n_latent, n_clusters, interaction, mode, n_trials: as in :class:`BinomialMixture`.
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
        if score_baseline not in ("leave_one_out", "mean"):
            raise ValueError(f"score_baseline must be 'leave_one_out' or 'mean', got {score_baseline!r}")
        if control_variate not in ("none", "conjugation"):
            raise ValueError(f"control_variate must be 'none' or 'conjugation', got {control_variate!r}")
        super().__init__(n_pixels, n_latent, n_clusters, interaction=interaction, mode=mode, n_trials=n_trials)
        self.score_baseline = score_baseline
        self.control_variate = control_variate

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
        surrogate = score_function_surrogate(score, self.posterior_log_prob(post, y, k), self.score_baseline)
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

    # -- objective -----------------------------------------------------------------------------
    def loss(self, x: Tensor, *, beta: float, entropy_weight: float = 5.0,
             posterior_entropy_weight: float = 10.0, conj_weight: float = 0.1,
             n_samples: int = 10, prior_samples: int = 1024,
             generator: torch.Generator | None = None,
             log_h: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """The training objective of the spec for one batch.

        ``loss = −mean_x[E_q log p(x|y,k) − β·KL] − w_ent·H[p(k)] − w_post·H[mean_x q(k|x)]
        + β·w_conj·Var_p[f]``. In ``analytical`` mode ``ρ`` is refitted first (:meth:`fit_rho`).

        Args:
            x: ``[B, D]`` float counts; beta: KL / conjugation weight ``β`` in [0, 1];
            entropy_weight: ``w_ent``; posterior_entropy_weight: ``w_post``;
            conj_weight: ``w_conj``; n_samples: ``S``; prior_samples: draws of the penalty;
            generator: RNG of all draws; log_h: ``[B]`` ``log h(x)`` if precomputed (nats).

        Computed by :func:`sweeplab.models.conjugated_step.training_loss`: the same mathematics
        as :meth:`elbo` and the penalties written out (the reference in
        ``tests/test_variational_mnist_step.py``), restructured so the ``[B, K, L]`` work is done
        once (issue 18); it consumes ``generator`` in the same order, so it draws the same samples.

        Returns:
            The scalar loss and floats ``elbo`` (batch mean at β = 1, nats), ``kl``,
            ``prior_entropy``, ``posterior_entropy``, ``conj_var``.
        """
        return training_loss(self, x, beta=beta, entropy_weight=entropy_weight,
                             posterior_entropy_weight=posterior_entropy_weight, conj_weight=conj_weight,
                             n_samples=n_samples, prior_samples=prior_samples, generator=generator, log_h=log_h)
