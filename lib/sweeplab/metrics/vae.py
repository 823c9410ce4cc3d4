"""Metrics of the VAE family (standard VAE, beta-VAE, DERP-VAE) as plain functions on tensors.

Every definition follows ``shared/specs/derp_vae.md`` (section "Metrics"); where a metric is a
standard one its paper is named. All functions take ``torch.Tensor`` inputs, never change them,
and work on any device. Functions meant as loss terms (:func:`ks_probe`, :func:`kl_gaussian`,
:func:`recon_bce`, :func:`elbo`) return tensors that carry gradients; the others return Python
numbers.

Conventions: ``n``/``B``/``N`` = number of samples, ``d`` = latent dimensions, ``P``/``K`` =
number of projection directions, ``D`` = input dimensions. ``logvar`` is ``log sigma^2`` of a
diagonal Gaussian posterior ``q(z|x) = N(mu, diag(sigma^2))``. Information is in nats.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "probes",
    "normal_cdf",
    "ks_probe",
    "ks_eval",
    "ks_two_sided",
    "kl_gaussian",
    "activation_rate",
    "active_units",
    "class_separation",
    "recon_bce",
    "elbo",
]

_SQRT2 = math.sqrt(2.0)


def probes(num_probes: int, latent_dim: int, generator: torch.Generator | None = None, *,
           device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random unit projection directions ("probes") of DERP.

    Each probe is ``theta_p ~ N(0, I_d)`` divided by its L2 norm, i.e. uniform on the unit
    sphere ``S^{d-1}``. Source: ``shared/specs/derp_vae.md`` ("DERP term").

    Args:
        num_probes: ``P`` >= 1.
        latent_dim: ``d`` >= 1.
        generator: CPU torch RNG to draw from (``None``: the global RNG).
        device, dtype: where and how the result is returned (drawn on the CPU, then moved, so a
            CPU generator gives the same probes on every device).

    Returns:
        ``[P, d]`` tensor whose rows have unit L2 norm.

    Raises:
        ValueError: if ``num_probes`` or ``latent_dim`` is below 1.
    """
    if num_probes < 1 or latent_dim < 1:
        raise ValueError(f"probes needs num_probes >= 1 and latent_dim >= 1, got {num_probes}, {latent_dim}")
    theta = torch.randn(num_probes, latent_dim, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    return theta.to(device=device, dtype=dtype)


def normal_cdf(s: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF ``Phi(s) = (1 + erf(s / sqrt 2)) / 2``, elementwise and differentiable."""
    return 0.5 * (1.0 + torch.erf(s / _SQRT2))


def _sorted_projections(z: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``[n, d] x [K, d]`` -> ``[K, n]`` projections ``z . theta_k``, sorted ascending per row."""
    if z.ndim != 2 or directions.ndim != 2 or z.shape[1] != directions.shape[1]:
        raise ValueError(
            f"expected z [n, d] and directions [K, d] with the same d, got {tuple(z.shape)} "
            f"and {tuple(directions.shape)}")
    if z.shape[0] < 1:
        raise ValueError("need at least one sample")
    return torch.sort(directions.to(z.dtype) @ z.T, dim=1).values


def ks_probe(z: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """The DERP statistic, averaged over probes: the DERP loss term and the ``ks_probe`` metric.

    For each probe ``theta_p`` let ``s = sort(z . theta_p)`` (``n`` values); then

        D_p = sqrt(n) * (1/n) * sum_{i=1..n} | i/n - Phi(s_(i)) |,     L_DERP = mean_p D_p,

    with ``Phi`` the standard normal CDF. This is an L1 (Cramer-von-Mises-like) distance between
    the empirical CDF and ``Phi``, scaled by ``sqrt(n)``; it is NOT the Kolmogorov-Smirnov
    statistic. Gradients flow through ``erf`` and through the sort (to the sorted values).
    For exactly N(0, 1) samples ``E[D] = 0.3203`` at ``n = 32`` and ``0.3151`` at ``n = 128``
    (the limit for large ``n`` is ``sqrt(2/pi) * pi/8 = 0.3133``), so the statistic has a floor
    well above 0. Source: ``shared/specs/derp_vae.md`` ("DERP term"; the runs' "KS Distance
    (train)" / "Dist. Loss").

    Args:
        z: ``[n, d]`` latent samples (one batch).
        directions: ``[P, d]`` unit probes (see :func:`probes`).

    Returns:
        0-dim tensor (dimensionless), differentiable w.r.t. ``z``.

    Raises:
        ValueError: on mismatched shapes or an empty batch.
    """
    s = _sorted_projections(z, directions)  # [P, n]
    n = s.shape[1]
    grid = torch.arange(1, n + 1, device=s.device, dtype=s.dtype) / n
    d_p = math.sqrt(n) * (grid - normal_cdf(s)).abs().mean(dim=1)  # [P]
    return d_p.mean()


def ks_eval(z: torch.Tensor, directions: torch.Tensor | None = None, *, num_projections: int = 10,
            generator: torch.Generator | None = None) -> float:
    """The runs' evaluation KS distance: mean over random unit projections of a one-sided max.

    For each direction ``theta_k`` let ``p = sort(z . theta_k)`` over ALL ``n`` test samples; then

        KS_k = max_{i=1..n} | i/n - Phi(p_(i)) |,     ks_eval = mean_k KS_k.

    This compares ``Phi`` with the empirical CDF only at its upper step values ``i/n``, so it is
    a lower bound of the standard two-sided statistic (see :func:`ks_two_sided`, which also
    checks ``(i-1)/n``); with ``n = 10000`` the two differ by at most ``1/n``. Source:
    ``shared/specs/derp_vae.md`` (metric ``ks_eval``; the runs' "KS Distance (eval)").

    Args:
        z: ``[n, d]`` latent samples of the whole test set.
        directions: ``[K, d]`` unit directions; when ``None``, ``num_projections`` fresh ones
            are drawn with :func:`probes` from ``generator``.
        num_projections: ``K`` when ``directions`` is ``None`` (the runs used 10).
        generator: CPU torch RNG for fresh directions.

    Returns:
        The mean statistic, a float in ``[0, 1]`` (dimensionless).

    Raises:
        ValueError: on mismatched shapes or an empty ``z``.
    """
    if directions is None:
        directions = probes(num_projections, z.shape[1], generator, device=z.device, dtype=z.dtype)
    with torch.no_grad():
        p = _sorted_projections(z.detach(), directions)
        n = p.shape[1]
        grid = torch.arange(1, n + 1, device=p.device, dtype=p.dtype) / n
        return float((grid - normal_cdf(p)).abs().amax(dim=1).mean())


def ks_two_sided(samples: torch.Tensor) -> torch.Tensor:
    """The standard one-sample Kolmogorov-Smirnov statistic against N(0, 1).

    ``D_n = sup_x |F_n(x) - Phi(x)| = max_i max(i/n - Phi(x_(i)), Phi(x_(i)) - (i-1)/n)``,
    exactly what ``scipy.stats.kstest(x, "norm").statistic`` returns (Kolmogorov 1933;
    Smirnov 1948). Computed in torch so that a whole ``[n, K]`` block of projections is handled
    with one sort; the tests check it against SciPy.

    Args:
        samples: ``[n]`` samples, or ``[n, K]`` for ``K`` independent columns.

    Returns:
        Dimensionless tensor in ``[0, 1]``: 0-dim for ``[n]`` input, ``[K]`` for ``[n, K]``.

    Raises:
        ValueError: for an empty input or more than two dimensions.
    """
    if samples.ndim not in (1, 2) or samples.shape[0] < 1:
        raise ValueError(f"ks_two_sided expects [n] or [n, K] samples with n >= 1, got {tuple(samples.shape)}")
    with torch.no_grad():
        x = torch.sort(samples.detach(), dim=0).values
        n = x.shape[0]
        i = torch.arange(1, n + 1, device=x.device, dtype=x.dtype)
        if x.ndim == 2:
            i = i[:, None]
        cdf = normal_cdf(x)
        d_plus = (i / n - cdf).amax(dim=0)
        d_minus = (cdf - (i - 1) / n).amax(dim=0)
        return torch.maximum(d_plus, d_minus)


def kl_gaussian(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL divergence of a diagonal Gaussian posterior from the standard normal prior, per sample.

    ``KL(N(mu, diag sigma^2) || N(0, I)) = -1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)``
    (Kingma & Welling 2014, appendix B). Source: ``shared/specs/derp_vae.md`` (``KL_sum`` and
    metric ``kl``: the test mean of this).

    Args:
        mu, logvar: ``[B, d]`` posterior means and log-variances.

    Returns:
        ``[B]`` tensor in nats (>= 0), differentiable.
    """
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=-1)


def activation_rate(logvar: torch.Tensor, threshold: float = 0.005) -> float:
    """The runs' "activation rate": share of (sample, dim) pairs with posterior variance above
    ``threshold``.

    ``mean_{b, j} 1[sigma_{b j}^2 > 0.005]``. HIGH means the posterior variances stay close to
    the prior's (a collapsed dimension has ``sigma^2 ~ 1`` and so counts as "active"); it is not
    a measure of information use, see :func:`active_units` for that. Source:
    ``shared/specs/derp_vae.md`` (metric ``activation_rate``).

    Args:
        logvar: ``[B, d]`` posterior log-variances.
        threshold: variance threshold (the runs used 0.005).

    Returns:
        Fraction in ``[0, 1]`` (not percent).
    """
    return float((logvar.detach().exp() > threshold).float().mean())


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of active latent units (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted
    Autoencoders", section 5.2).

    Unit ``j`` is active if ``A_j = Var_x(E_{q(z|x)}[z_j]) > threshold``; ``E_q[z_j|x] = mu_j(x)``
    for a Gaussian posterior, and the variance is the sample variance over the data set (with
    Bessel's correction). A collapsed unit has ``mu_j(x)`` nearly constant in ``x``. Source:
    ``shared/specs/derp_vae.md`` (metric ``active_units``).

    Args:
        mu: ``[N, d]`` posterior means over a whole data set (N >= 2).
        threshold: the paper's 0.01.

    Returns:
        Count in ``0..d``.

    Raises:
        ValueError: if fewer than two samples are given.
    """
    if mu.ndim != 2 or mu.shape[0] < 2:
        raise ValueError(f"active_units needs mu of shape [N >= 2, d], got {tuple(mu.shape)}")
    var = mu.detach().double().var(dim=0, correction=1)
    return int((var > threshold).sum())


def class_separation(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Between-class over within-class scatter of latent codes: ``trace(S_B) / trace(S_W)``.

    ``trace S_B = sum_c n_c ||zbar_c - zbar||^2``, ``trace S_W = sum_c sum_{i in c} ||z_i - zbar_c||^2``
    (Fisher's scatter matrices, e.g. Duda, Hart & Stork, "Pattern Classification", 3.8.3).
    Source: ``shared/specs/derp_vae.md`` (metric ``class_separation``, the runs' "Class Sep.
    Ratio", computed on sampled test z).

    Args:
        z: ``[N, d]`` latent codes.
        labels: ``[N]`` integer class labels.

    Returns:
        The ratio (dimensionless, >= 0); ``inf`` when every class is a single point and the
        classes differ, ``nan`` when all codes are identical.

    Raises:
        ValueError: on mismatched lengths.
    """
    if z.ndim != 2 or labels.ndim != 1 or z.shape[0] != labels.shape[0]:
        raise ValueError(f"expected z [N, d] and labels [N], got {tuple(z.shape)} and {tuple(labels.shape)}")
    z = z.detach().double()
    labels = labels.detach().to(z.device)
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(classes), z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, inverse, z)
    means = sums / counts[:, None].to(z.dtype)
    grand = z.mean(dim=0)
    between = float((counts.to(z.dtype) * (means - grand).pow(2).sum(dim=1)).sum())
    within = float((z - means[inverse]).pow(2).sum())
    if within == 0.0:
        return math.inf if between > 0 else math.nan
    return between / within


def recon_bce(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli reconstruction negative log-likelihood per sample (summed over pixels).

    ``BCE(x_hat, x) = -sum_k [x_k log x_hat_k + (1 - x_k) log(1 - x_hat_k)]`` with targets
    ``x`` in [0, 1] (continuous targets as in the runs; the logs are clamped at -100 as in
    ``torch.nn.functional.binary_cross_entropy``). Source: ``shared/specs/derp_vae.md``
    (``BCE_sum`` of the loss and metric ``recon_bce``).

    Args:
        x_hat: decoder means in (0, 1), any shape ``[B, ...]``.
        x: targets in [0, 1], same shape.

    Returns:
        ``[B]`` tensor in nats, differentiable w.r.t. ``x_hat``.
    """
    bce = F.binary_cross_entropy(x_hat, x, reduction="none")
    return bce.flatten(start_dim=1).sum(dim=1)


def elbo(x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Single-sample evidence lower bound per sample: ``ELBO = -BCE(x_hat, x) - KL(q(z|x) || p(z))``.

    Always the true ELBO (weight 1 on the KL) whatever beta the model was trained with, so
    models are comparable; ``x_hat`` is decoded from one reparameterised ``z ~ q(z|x)``
    (Kingma & Welling 2014, eq. 7). Source: ``shared/specs/derp_vae.md`` (metric ``elbo``).

    Args:
        x_hat, x: as in :func:`recon_bce`.
        mu, logvar: ``[B, d]`` as in :func:`kl_gaussian`.

    Returns:
        ``[B]`` tensor in nats (higher is better), differentiable.
    """
    return -recon_bce(x_hat, x) - kl_gaussian(mu, logvar)
