"""The conjugated mixture model's training step (``ConjugatedMixture.loss``) against a reference:
the step as it was before it was restructured for speed (issue 18, item 3), copied here.

The reference below is a verbatim transcription of ``ConjugatedMixture.loss`` and everything it
called at commit 51cae7f (``lib/sweeplab/models/variational_mnist.py``, ``binomial_mixture.py``,
``exponential_family.py``), written as plain functions of the model's parameters so it does not
depend on the code it checks. It is the straightforward form of the spec's objective
(``shared/specs/variational_mnist.md``): every term as written there, σ and softplus recomputed
where used, the sampled logits gathered, ``W + W_k`` built per use. ``bench/bench_variational_mnist_step.py``
times it against the current step.

The new step must give the same loss, the same reported terms and the same gradient of every
parameter from the same inputs and the same random draws (it consumes the generator identically).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sweeplab.models.variational_mnist import ConjugatedMixture

# -- the reference: the step at commit 51cae7f -------------------------------------------------------


def _with_reference(offsets):
    return torch.cat([offsets.new_zeros((1, *offsets.shape[1:])), offsets], 0)


def _mixture_log_weights(bias, logits, sp=None):
    sp = F.softplus(logits) if sp is None else sp
    return torch.log_softmax(bias + sp.sum(-1), dim=-1)


def _bernoulli_sample(logits, generator):
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    return (u < torch.sigmoid(logits.detach())).to(logits.dtype)


def _prior(m):
    """Prior logits [K, L], cluster bias [K] and log p(k) [K]."""
    prior_logits = m.theta_y + _with_reference(m.theta_y_k)
    bias = _with_reference(m.theta_k[:, None])[:, 0]
    return prior_logits, bias, _mixture_log_weights(bias, prior_logits)


def _log_partition(m, y, k):
    """ψ_X(η(y, k)) [N], grouped by cluster as the old ``BinomialMixture._grouped``."""
    def fn(eta):
        return m.n_trials * F.softplus(eta).sum(-1)
    if m.interaction == "hierarchical":
        return fn(torch.addmm(m.theta_x, y, m.w.T))
    order = torch.argsort(k)
    counts = torch.bincount(k, minlength=m.n_clusters).tolist()
    chunks = y[order].split(counts)
    w_ks, b_ks = m.w_k.unbind(1), m.b.unbind(0)
    parts = [fn(torch.addmm(m.theta_x, chunks[0], m.w.T))]
    for j in range(1, m.n_clusters):
        if counts[j]:
            parts.append(fn(torch.addmm(m.theta_x + b_ks[j - 1], chunks[j], (m.w + w_ks[j - 1]).T)))
    return torch.cat(parts)[torch.argsort(order)]


def _sample_prior(m, n, generator):
    with torch.no_grad():
        prior_logits, _, log_pk = _prior(m)
        k = torch.multinomial(log_pk.exp(), n, replacement=True, generator=generator)
        return _bernoulli_sample(prior_logits[k], generator), k


def _log_base_measure(x, n):
    levels = torch.arange(n + 1, dtype=torch.float64)
    table = math.lgamma(n + 1) - torch.lgamma(levels + 1) - torch.lgamma(n - levels + 1)
    return table.to(x.dtype)[x.round().long()].sum(-1)


def _posterior(m, x):
    B, K, L = x.shape[0], m.n_clusters, m.n_latent
    xw0 = x @ m.w
    if m.interaction == "full":
        xwk = (x @ m.w_k.reshape(m.n_pixels, (K - 1) * L)).view(B, K - 1, L)
        xw = torch.cat([xw0[:, None], xw0[:, None] + xwk], 1)
        xb = torch.cat([x.new_zeros(B, 1), x @ m.b.T], 1)
    else:
        xw, xb = xw0[:, None].expand(B, K, L), x.new_zeros(B, K)
    logits = m.theta_y - m.rho + _with_reference(m.theta_y_k) + xw
    sp = F.softplus(logits)
    log_qk = _mixture_log_weights(_prior(m)[1] + xb, logits, sp)
    return logits, log_qk, xw, xb, sp


def _expected_log_partition(m, logits, log_qk, S, generator):
    B, L = log_qk.shape[0], m.n_latent
    with torch.no_grad():
        k = torch.multinomial(log_qk.exp(), S, replacement=True, generator=generator)
        y = _bernoulli_sample(logits.gather(1, k[:, :, None].expand(-1, -1, L)), generator)
    psi = _log_partition(m, y.reshape(B * S, -1), k.reshape(-1)).view(B, S)
    value, score = psi.mean(1), psi.detach()
    if m.control_variate == "conjugation":
        rho = m.rho.detach()
        linear = y @ rho
        mean_y = (log_qk.exp()[:, :, None] * torch.sigmoid(logits)).sum(1)
        value, score = value + mean_y @ rho - linear.mean(1), score - linear
    sampled = logits.gather(1, k[:, :, None].expand(-1, -1, L))
    log_prob = log_qk.gather(1, k) + (y * sampled - F.softplus(sampled)).sum(-1)
    if m.score_baseline == "leave_one_out":
        base = (score.sum(1, keepdim=True) - score) / (S - 1)
    else:
        base = score.mean(1, keepdim=True)
    surrogate = ((score - base) * log_prob).mean(1)
    return value + surrogate - surrogate.detach()


def reference_loss(m, x, *, beta, entropy_weight=5.0, posterior_entropy_weight=10.0, conj_weight=0.1,
                   n_samples=10, prior_samples=1024, generator=None):
    """The old ``ConjugatedMixture.loss`` (``n_samples`` ≥ 2): (loss, stats). ``analytical``
    mode refits ρ first with the model's ``fit_rho`` (unchanged by the restructuring)."""
    if m.mode == "analytical":
        m.fit_rho(generator=generator)
    logits, log_qk, xw, xb, sp = _posterior(m, x)
    prior_logits, _, log_pk = _prior(m)
    bern = (torch.sigmoid(logits) * (logits - prior_logits) - sp + F.softplus(prior_logits)).sum(-1)
    kl_rows = (log_qk.exp() * (log_qk - log_pk)).sum(-1) + (log_qk.exp() * bern).sum(-1)
    inner = xb + (xw * torch.sigmoid(logits)).sum(-1)
    x_eta = x @ m.theta_x + (log_qk.exp() * inner).sum(-1)
    exp_ll = (x_eta + _log_base_measure(x, m.n_trials)
              - _expected_log_partition(m, logits, log_qk, n_samples, generator)).mean()
    kl = kl_rows.mean()
    h_prior = -(log_pk.exp() * log_pk).sum(-1)
    mean_qk = log_qk.exp().mean(0)
    h_post = -(mean_qk * torch.log(mean_qk.clamp_min(1e-30))).sum()
    loss = -(exp_ll - beta * kl) - entropy_weight * h_prior - posterior_entropy_weight * h_post
    conj_var = torch.zeros(())
    if conj_weight and beta:
        y, k = _sample_prior(m, prior_samples, generator)
        conj_var = (y @ m.rho - _log_partition(m, y, k)).var()
        loss = loss + beta * conj_weight * conj_var
    stats = {"elbo": float((exp_ll - kl).detach()), "kl": float(kl.detach()),
             "prior_entropy": float(h_prior.detach()), "posterior_entropy": float(h_post.detach()),
             "conj_var": float(conj_var.detach())}
    return loss, stats


# -- the checks ------------------------------------------------------------------------------------

D, L, K, B = 48, 12, 5, 40


def make_model(interaction="full", control_variate="none", score_baseline="leave_one_out",
               dtype=torch.float64, seed=0, mode="gradient") -> ConjugatedMixture:
    """A small model with every parameter at a visible scale (so every term and gradient matters)."""
    torch.manual_seed(seed)
    m = ConjugatedMixture(D, L, K, interaction=interaction, control_variate=control_variate,
                          score_baseline=score_baseline, mode=mode).to(dtype)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.randn_like(p) * (0.05 if name in ("w", "w_k", "b") else 0.5))
    return m


def make_batch(dtype=torch.float64, seed=1) -> torch.Tensor:
    """[B, D] counts in 0..16, mostly zero, with pixels that are zero in every row (as MNIST's border)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 17, (B, D), generator=g).to(dtype)
    x = x * (torch.rand(B, D, generator=g) < 0.3)
    x[:, :5] = 0
    x[:, D // 2] = 0
    return x


def run(fn, m, x, seed=2, **kw):
    """Loss, stats and every parameter's gradient of one step with a fresh generator."""
    m.zero_grad(set_to_none=True)
    loss, stats = fn(m, x, generator=torch.Generator().manual_seed(seed), **kw)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    return float(loss.detach()), stats, grads


def new_loss(m, x, **kw):
    return m.loss(x, **kw)


def assert_same_step(m, x, rtol, atol, **kw):
    ref = run(reference_loss, m, x, **kw)
    new = run(new_loss, m, x, **kw)
    assert new[0] == pytest.approx(ref[0], rel=rtol, abs=atol)
    assert set(new[1]) == set(ref[1])
    for key, value in ref[1].items():
        assert new[1][key] == pytest.approx(value, rel=rtol, abs=atol), key
    assert set(new[2]) == set(ref[2])
    for name, g in ref[2].items():
        assert g.abs().max() > 0, name  # every parameter gets a gradient: the check is not vacuous
        torch.testing.assert_close(new[2][name], g, rtol=rtol, atol=atol * g.abs().max().item(), msg=name)


@pytest.mark.parametrize("interaction, control_variate, score_baseline", [
    ("full", "none", "leave_one_out"), ("full", "conjugation", "mean"),
    ("hierarchical", "none", "mean"), ("hierarchical", "conjugation", "leave_one_out")])
def test_step_equals_the_reference_in_float64(interaction, control_variate, score_baseline):
    m = make_model(interaction, control_variate, score_baseline)
    assert_same_step(m, make_batch(), rtol=1e-10, atol=1e-10, beta=0.7, n_samples=4, prior_samples=64)


def test_step_equals_the_reference_without_the_penalty_and_in_float32():
    m = make_model()
    assert_same_step(m, make_batch(), rtol=1e-10, atol=1e-10, beta=0.0, n_samples=3, prior_samples=64)
    m32, x32 = make_model(dtype=torch.float32), make_batch(torch.float32)
    assert_same_step(m32, x32, rtol=1e-5, atol=1e-5, beta=1.0, n_samples=10, prior_samples=128,
                     entropy_weight=2.0, posterior_entropy_weight=3.0, conj_weight=0.3)


def test_step_equals_the_reference_in_analytical_mode():
    m = make_model(mode="analytical")
    assert_same_step(m, make_batch(), rtol=1e-10, atol=1e-10, beta=0.4, n_samples=5, prior_samples=64)


def test_the_reference_is_a_different_computation_of_the_same_numbers():
    # guards the test itself: another seed changes the draws, hence the loss
    m, x = make_model(), make_batch()
    a, b = run(reference_loss, m, x, beta=0.5), run(reference_loss, m, x, seed=3, beta=0.5)
    assert a[0] != pytest.approx(b[0], rel=1e-6)
