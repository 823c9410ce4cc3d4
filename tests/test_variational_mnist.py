"""The conjugated mixture model (shared/specs/variational_mnist.md) against brute-force enumeration,
its estimators' unbiasedness and its gradients (the family on tiny data: test_variational_mnist_family.py)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from sweeplab.metrics.clustering import conjugation_r2
from sweeplab.models.exponential_family import binomial_log_partition, kl_posterior_prior
from sweeplab.models.variational_mnist import ConjugatedMixture

torch.set_num_threads(1)
D, L, K, N_TRIALS = 4, 3, 2, 16


def tiny_model(interaction: str = "full", seed: int = 0, mode: str = "gradient",
               w_scale: float = 0.4, control_variate: str = "none") -> ConjugatedMixture:
    """A tiny model with every parameter drawn at a visible scale (not the spec's tiny init);
    ``w_scale`` is the scale of ``W``, ``W_k``, ``b`` (small values keep q(y, k|x) spread out)."""
    torch.manual_seed(seed)
    m = ConjugatedMixture(D, L, K, interaction=interaction, mode=mode, n_trials=N_TRIALS,
                          control_variate=control_variate).double()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.randn_like(p) * (w_scale if name in ("w", "w_k", "b") else 0.4))
        m.rho.copy_(torch.randn(L, dtype=torch.float64) * 2.0 * w_scale / 0.4)
    return m


def all_configs() -> tuple[torch.Tensor, torch.Tensor]:
    """Every (y, k): y [2^L * K, L] and k [2^L * K]."""
    ys = torch.tensor(list(itertools.product([0.0, 1.0], repeat=L)), dtype=torch.float64)
    y = ys.repeat(K, 1)
    k = torch.arange(K).repeat_interleave(len(ys))
    return y, k


def explicit_eta(m: ConjugatedMixture, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """η(y, k) = θ_X + b_k + (W + W_k) y, written out row by row."""
    rows = []
    for yi, ki in zip(y, k.tolist()):
        w = m.w.clone()
        eta = m.theta_x.clone()
        if m.interaction == "full" and ki > 0:
            w = w + m.w_k[:, ki - 1, :]
            eta = eta + m.b[ki - 1]
        rows.append(eta + w @ yi)
    return torch.stack(rows)


def enumerate_joint(m: ConjugatedMixture, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Brute force over all (y, k) for one image x [D]: log p(y,k), log p(x|y,k), log q(y,k|x)."""
    y, k = all_configs()
    prior_logits = m.theta_y + torch.cat([torch.zeros(1, L, dtype=y.dtype), m.theta_y_k])
    theta_k = torch.cat([torch.zeros(1, dtype=y.dtype), m.theta_k])
    score = (prior_logits[k] * y).sum(1) + theta_k[k]
    log_prior = score - torch.logsumexp(score, 0)
    eta = explicit_eta(m, y, k)
    log_lik = torch.distributions.Binomial(N_TRIALS, logits=eta).log_prob(x.expand_as(eta)).sum(1)
    # q(y, k|x) ∝ p(y, k) exp(x·η(y,k) − ρ·y): the definition log p(x,y,k) − log q = f + c(x)
    q_score = log_prior + eta @ x - y @ m.rho
    log_q = q_score - torch.logsumexp(q_score, 0)
    return {"y": y, "k": k, "log_prior": log_prior, "log_lik": log_lik, "log_q": log_q, "eta": eta}


def exact_elbo(m: ConjugatedMixture, x: torch.Tensor) -> torch.Tensor:
    """Σ_{y,k} q (log p(x,y,k) − log q), differentiable in the parameters."""
    e = enumerate_joint(m, x)
    q = e["log_q"].exp()
    return (q * (e["log_prior"] + e["log_lik"] - e["log_q"])).sum()


def image(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, N_TRIALS + 1, (D,), generator=torch.Generator().manual_seed(seed)).double()


# ------------------------------------------------------------------------------------------------
# closed forms vs enumeration
# ------------------------------------------------------------------------------------------------
def test_binomial_log_partition_matches_sum_over_all_images():
    eta = torch.tensor([[-1.3, 0.2, 2.1, -0.4], [0.0, 0.5, -3.0, 1.0]], dtype=torch.float64)
    levels = torch.arange(N_TRIALS + 1, dtype=torch.float64)
    xs = torch.cartesian_prod(*[levels] * D)  # all 17^4 images
    log_h = (torch.lgamma(torch.tensor(N_TRIALS + 1.0, dtype=torch.float64)) - torch.lgamma(xs + 1)
             - torch.lgamma(N_TRIALS - xs + 1)).sum(1)
    brute = torch.logsumexp(log_h[None] + eta @ xs.T, 1)
    torch.testing.assert_close(binomial_log_partition(eta, N_TRIALS), brute)


@pytest.mark.parametrize("interaction", ["full", "hierarchical"])
def test_prior_eta_and_likelihood_match_enumeration(interaction):
    m = tiny_model(interaction)
    x = image()
    e = enumerate_joint(m, x)
    y, k = e["y"], e["k"]
    with torch.no_grad():
        log_pk = m.prior_log_pk()
        closed = log_pk[k] + torch.distributions.Bernoulli(logits=m.prior_logits()[k]).log_prob(y).sum(1)
        torch.testing.assert_close(closed, e["log_prior"])
        torch.testing.assert_close(m.eta(y, k), e["eta"])
        torch.testing.assert_close(m.log_likelihood(x.expand(len(y), D), y, k), e["log_lik"])


@pytest.mark.parametrize("interaction", ["full", "hierarchical"])
def test_posterior_kl_and_expectations_match_enumeration(interaction):
    m = tiny_model(interaction, seed=3)
    x = image(5)
    e = enumerate_joint(m, x)
    y, k = e["y"], e["k"]
    with torch.no_grad():
        post = m.posterior(x[None])
        log_q = m.posterior_log_prob(post, y[None], k[None])[0]
        torch.testing.assert_close(log_q, e["log_q"])
        torch.testing.assert_close(torch.logsumexp(log_q, 0), torch.zeros((), dtype=log_q.dtype))
        q = e["log_q"].exp()
        kl = kl_posterior_prior(post.log_qk, post.logits, m.prior_log_pk(), m.prior_logits())
        torch.testing.assert_close(kl[0], (q * (e["log_q"] - e["log_prior"])).sum())
        torch.testing.assert_close(m.expected_x_dot_eta(x[None], post)[0], (q * (e["eta"] @ x)).sum())
        torch.testing.assert_close(m.expected_eta(post)[0], (q[:, None] * e["eta"]).sum(0))


def conjugate_toy(interaction: str = "full") -> ConjugatedMixture:
    """An exactly conjugate model: each latent drives its own pixel, with the same θ_X and weight
    per latent in every cluster (cluster 1 permutes which pixel), so ψ_X(η(y,k)) = c + ρ*·y."""
    m = tiny_model(interaction, seed=7)
    theta, weights = 0.3, torch.tensor([1.5, -0.8, 0.6], dtype=torch.float64)
    with torch.no_grad():
        m.theta_x.fill_(theta)
        m.w.zero_()
        for j in range(L):
            m.w[j, j] = weights[j]
        if interaction == "full":
            m.b.zero_()
            w1 = torch.zeros(D, L, dtype=torch.float64)
            for j, pixel in enumerate([3, 0, 1]):
                w1[pixel, j] = weights[j]
            m.w_k[:, 0, :] = w1 - m.w
        sp = torch.nn.functional.softplus
        m.rho.copy_(N_TRIALS * (sp(theta + weights) - sp(torch.tensor(theta, dtype=torch.float64))))
    return m


@pytest.mark.parametrize("interaction", ["full", "hierarchical"])
def test_constant_f_makes_q_the_exact_posterior_and_r2_one(interaction):
    m = conjugate_toy(interaction)
    x = image(11)
    e = enumerate_joint(m, x)
    with torch.no_grad():
        f = m.conjugation_residual(e["y"], e["k"])
        torch.testing.assert_close(f, f[0].expand_as(f))  # constant: exactly conjugate
        joint = e["log_prior"] + e["log_lik"]
        exact_post = joint - torch.logsumexp(joint, 0)
        log_q = m.posterior_log_prob(m.posterior(x[None]), e["y"][None], e["k"][None])[0]
        torch.testing.assert_close(log_q, exact_post)
        # the ELBO is then the log evidence
        torch.testing.assert_close(exact_elbo(m, x), torch.logsumexp(joint, 0))
        f_s, psi_s = m.conjugation_samples(2000, torch.Generator().manual_seed(0))
        assert psi_s.var() > 1.0
        assert conjugation_r2(f_s, psi_s) == pytest.approx(1.0, abs=1e-9)
    # and the same model with ρ = 0 is far from conjugate
    with torch.no_grad():
        m.rho.zero_()
        f_s, psi_s = m.conjugation_samples(2000, torch.Generator().manual_seed(0))
    assert conjugation_r2(f_s, psi_s) < 0.01


def test_analytical_mode_fits_the_exact_slope():
    m = conjugate_toy("full")
    target = m.rho.detach().clone()
    a = ConjugatedMixture(D, L, K, interaction="full", mode="analytical", n_trials=N_TRIALS).double()
    a.load_state_dict({k: v for k, v in m.state_dict().items()})
    assert not any(p is a.rho for p in a.parameters())  # ρ is a buffer, not learned
    with torch.no_grad():
        a.rho.zero_()
    a.fit_rho(200, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.rho, target)


# ------------------------------------------------------------------------------------------------
# Monte-Carlo estimators: value and gradient unbiased
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("control_variate", ["none", "conjugation"])
@pytest.mark.parametrize("interaction", ["full", "hierarchical"])
def test_mc_elbo_value_is_unbiased(interaction, control_variate):
    m = tiny_model(interaction, seed=2, control_variate=control_variate)
    x = image(4)
    with torch.no_grad():
        exact = exact_elbo(m, x)
        est = m.elbo(x.expand(20_000, D), n_samples=4, generator=torch.Generator().manual_seed(0))["elbo"]
    se = est.std() / math.sqrt(len(est))
    assert se > 0
    assert abs(est.mean() - exact) < 4 * se


@pytest.mark.parametrize("control_variate", ["none", "conjugation"])
def test_mc_elbo_gradient_is_unbiased_with_score_function_term(control_variate):
    m = tiny_model("full", seed=9, w_scale=0.05, control_variate=control_variate)
    x = image(6)
    params = [p for p in m.parameters()]
    # a posterior that puts real mass everywhere, so every term of the gradient is sampled
    assert enumerate_joint(m, x)["log_q"].exp().min() > 1e-3
    exact = torch.autograd.grad(exact_elbo(m, x), params)
    exact = torch.cat([g.flatten() for g in exact])
    gen = torch.Generator().manual_seed(0)
    chunks = []
    for _ in range(40):
        est = m.elbo(x.expand(1000, D), n_samples=10, generator=gen)["elbo"].mean()
        chunks.append(torch.cat([g.flatten() for g in torch.autograd.grad(est, params)]))
    g = torch.stack(chunks)
    mean, se = g.mean(0), g.std(0) / math.sqrt(len(g))
    assert (exact.abs() > 1e-3).sum() > 10  # the comparison is not vacuous
    assert torch.all((mean - exact).abs() <= 5 * se + 1e-6), (mean - exact).abs() / se
    # without the score-function term, the gradient of the posterior's parameters is wrong
    m_pathwise = tiny_model("full", seed=9, w_scale=0.05)
    post = m_pathwise.posterior(x.expand(5000, D))
    y, k = m_pathwise.sample_posterior(post, 10, torch.Generator().manual_seed(1))
    psi = m_pathwise.log_partition(y.reshape(-1, L), k.reshape(-1)).mean()
    naive = torch.autograd.grad(psi, m_pathwise.theta_y, allow_unused=True)[0]
    assert naive is None  # sampling carries no gradient: the surrogate is what reaches q


def test_conjugation_control_variate_cuts_the_score_function_variance():
    # rho fitted by least squares (analytical mode) on a model whose psi_X is far from constant
    # in y: the control variate rho.y takes most of psi's variation out of the score-function
    # term, so the posterior's gradients scatter much less around the same mean
    grads, r2 = {}, None
    for cv in ("none", "conjugation"):
        m = tiny_model("full", seed=9, mode="analytical", w_scale=0.3, control_variate=cv)
        m.fit_rho(4000, torch.Generator().manual_seed(3))
        if r2 is None:
            r2 = conjugation_r2(*m.conjugation_samples(20_000, torch.Generator().manual_seed(4)))
        x = image(6)
        gen = torch.Generator().manual_seed(0)
        rows = []
        for _ in range(60):
            est = m.elbo(x.expand(50, D), n_samples=10, generator=gen)["elbo"].mean()
            g = torch.autograd.grad(est, [m.theta_y, m.theta_y_k, m.theta_k])
            rows.append(torch.cat([t.flatten() for t in g]))
        grads[cv] = torch.stack(rows)
    assert 0.1 < r2 < 0.999  # psi is neither constant in y nor exactly linear (cluster offsets stay)
    plain, cv = grads["none"], grads["conjugation"]
    assert plain.var(0).sum() > 3 * cv.var(0).sum(), (plain.var(0).sum(), cv.var(0).sum())
    # same expectation: the means agree within their standard errors
    se = (plain.var(0) / len(plain) + cv.var(0) / len(cv)).sqrt()
    assert torch.all((plain.mean(0) - cv.mean(0)).abs() <= 5 * se + 1e-9)


def test_conjugation_penalty_reaches_rho_and_eta_parameters_only():
    m = tiny_model("full", seed=4)
    var = m.conjugation_variance(512, torch.Generator().manual_seed(0))
    var.backward()
    for name in ("rho", "theta_x", "w", "w_k", "b"):
        grad = getattr(m, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    for name in ("theta_y", "theta_y_k", "theta_k"):
        assert getattr(m, name).grad is None, name


def test_spec_initialisation_scales():
    L_, K_, D_ = 16, 5, 784
    m = ConjugatedMixture(D_, L_, K_)
    pbar = torch.linspace(0.0, 1.0, D_)
    m.reset_parameters(pbar, torch.Generator().manual_seed(0))
    assert torch.count_nonzero(m.rho) == 0
    resid = m.theta_x.detach() - torch.logit(0.99 * pbar + 0.005)
    assert resid.std().item() == pytest.approx(0.1, rel=0.1)
    assert m.theta_y_k.detach().std().item() == pytest.approx(0.5, rel=0.15)
    assert m.w.detach().std().item() == pytest.approx(0.1 / math.sqrt(D_ * (L_ * K_ + K_ - 1)), rel=0.05)
    assert m.w_k.detach().std().item() == pytest.approx(0.1 / math.sqrt(D_ * L_), rel=0.05)
    assert m.b.detach().std().item() == pytest.approx(0.1 / math.sqrt(D_), rel=0.1)
