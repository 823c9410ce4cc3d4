"""``gmm_vae``: the GMM-3D report's dense VAE on a mixture of spherical Gaussians (``gmm3d``),
judged by how many of the mixture's modes its samples recover.

Source: ``../shared/specs/gmm_vae.md`` (model §2, generation §3.1, metrics §3.2-3.4, sweep §5);
the report is ``../shared/seeds/gmm_vae_report.md``. Model: :class:`~sweeplab.models.gmm_vae.DenseVAE`
with a Gaussian likelihood; sample metrics: :mod:`sweeplab.metrics.samples`.

One iteration is one epoch over the training points in shuffled batches (``drop_last`` off: 11
steps of 96 on 1,000 points). Every ``eval_every`` epochs and after the last, the family draws
``n_gen`` codes ``z ~ N(0, I)`` (seeded by the trial's seed and the epoch, never the training RNG),
decodes them (the mean, or a draw with ``decode: sample``), maps them back to the data's space
when a ``scaler`` is on (fitted on the training split only, never on samples), and reports:

* the mode metrics (``hq_fraction``, ``modes_captured``, ``modes_covered_0p1``, ``mode_kl``,
  ``spread_ratio``, ``spread_ratio_min``, ``elbow_k_raw``, ``elbow_k_scaled``) and ``mode_score``
  (``modes_covered_0p1 + hq_fraction``: the spec's selection rule, ties broken by
  ``hq_fraction``, as one number a searcher can maximise);
* each one's *ceiling* (``<name>_ceiling``, constant): the same metric of the held-out test
  draw, true samples standing in for generated ones;
* on the test draw: ``test_elbo`` (single-sample ELBO, nats per point, in the data's original
  space), ``test_recon_nll``, ``test_kl``, ``test_mse``, ``test_active_units`` and the latent
  structure ``test_latent_nmi`` and ``test_latent_knn_purity`` (spec §3.3).

The mixture's means, weights and sigma come from the bundle's ``meta`` (``gmm3d``); on other
labelled vector data they are estimated from the training split (class means, class shares,
pooled within-class standard deviation). TensorBoard images (``logging.media_every``): generated
vs true points, the latent means coloured by true component, and their t-SNE.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.evaluation import EvalCache, EvalConfig, eval_generator
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.optim import OptimizerConfig, build_optimizer, count_params
from sweeplab.kit.tensors import batches
from sweeplab.metrics import samples as sm
from sweeplab.metrics.convention import Metric
from sweeplab.metrics.vae import active_units
from sweeplab.models.gmm_vae import DenseVAE, kl_standard_normal, neg_elbo_terms, recon_nll, training_loss

#: Sample metrics: (name, mode, unit, description); each also has a constant ``<name>_ceiling``.
_SAMPLE_METRICS: tuple[tuple[str, Any, str, str], ...] = (
    ("hq_fraction", "max", "fraction", "VEEGAN: share of samples within 3 sigma of the nearest true mean"),
    ("modes_captured", "max", "count", "VEEGAN: components nearest to >= 1 high-quality sample"),
    ("modes_covered_0p1", "max", "count", "spec: components with n_k >= max(1, ceil(0.1*0.9707*n_gen*w_k)) "
                                          "high-quality samples (modes_covered@0.1)"),
    ("mode_kl", "min", "nats", "KL(hq nearest-mean histogram || true weights), eps 1e-6"),
    ("spread_ratio", None, "ratio", "mean over dimensions of std_j(samples)/std_j(train); 1 = the data's spread"),
    ("spread_ratio_min", None, "ratio", "smallest per-dimension std ratio"),
    ("elbow_k_raw", None, "count", "the report's elbow count: k-means k=1..15 + Kneedle, on raw samples"),
    ("elbow_k_scaled", None, "count", "the same on samples standardised with the training data's scaler"),
)


@register_family
class GMMVAEFamily(ModelFamily):
    """The dense VAE of the GMM-3D report with mode-coverage metrics (see the module docstring)."""

    name: ClassVar[str] = "gmm_vae"

    class Config(OptimizerConfig, EvalConfig, FamilyConfig):
        """Hyperparameters; defaults are the report's (dimz 2, Adam 1e-3, batch 96, 100 epochs)
        and the spec's proposals where it is silent (h 64, depth 2, var_x 0.1, softplus)."""

        dimz: int = Field(2, ge=1, description="latent dimension")
        hidden: int = Field(64, ge=1, description="width of every hidden layer")
        depth: int = Field(2, ge=1, description="hidden layers of the encoder and of the decoder")
        var_x: float = Field(0.1, gt=0, description="variance of the Gaussian likelihood (1.0 = the "
                                                    "components' own; 0.1 = the course template's)")
        beta: float = Field(1.0, ge=0, description="weight of the KL term")
        loss: Literal["gaussian_elbo", "mse_kl"] = Field(
            "gaussian_elbo", description="gaussian_elbo: -ELBO with var_x; mse_kl: per-element MSE + beta*KL "
                                         "(the report's loss scale)")
        var_head: Literal["softplus", "logvar"] = Field("softplus", description="posterior variance head")
        decode: Literal["mean", "sample"] = Field("mean", description="samples are the decoder mean or a draw "
                                                                      "from N(mean, var_x)")
        scaler: Literal["none", "standard", "minmax"] = Field(
            "none", description="train on per-column scaled data (fitted on the training split, inverted "
                                "before every metric): standard (mean 0, std 1) or minmax ([0, 1], the report's "
                                "'scaling independently for each column')")
        batch_size: int = Field(96, ge=1, description="training batch (the report's 96)")
        epochs: int = Field(100, ge=1, description="epochs (= iterations)")
        n_gen: int = Field(1000, ge=15, description="generated samples per evaluation (report 1,000; "
                                                    "VEEGAN 2,500)")
        eval_every: int = Field(10, ge=1, description="evaluate every N epochs (and after the last)")

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "nats", "epoch mean of the batch-mean training loss (nats for "
                                            "gaussian_elbo; MSE + beta*KL for mse_kl)"),
        Metric("test_elbo", "max", "nats", "single-sample ELBO per test point, original data space"),
        Metric("test_recon_nll", "min", "nats", "-log p(x|z) per test point (Gaussian, var_x)"),
        Metric("test_kl", "min", "nats", "KL(q(z|x) || N(0, I)) per test point"),
        Metric("test_mse", "min", "squared target units", "per-element squared error of the reconstruction"),
        Metric("test_active_units", "max", "count", "Burda et al. 2016: dims with Var_x(mu_j(x)) > 0.01"),
        Metric("test_latent_nmi", "max", "ratio", "NMI of true components vs KMeans(K) on the latent means"),
        Metric("test_latent_knn_purity", "max", "fraction", "share of each point's 10 nearest latent "
                                                             "neighbours in its own component"),
        *(Metric(n, mode, unit, desc) for n, mode, unit, desc in _SAMPLE_METRICS),
        Metric("mode_score", "max", "count", "modes_covered_0p1 + hq_fraction: the spec's selection "
                                             "(modes first, ties by hq_fraction) as one number"),
        *(Metric(f"{n}_ceiling", mode, unit, f"{n} of the held-out true test draw (what a perfect "
                 "generator gets)") for n, mode, unit, _ in _SAMPLE_METRICS),
        Metric("num_params", "min", "count", "trainable parameters"),
    )
    data_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    contract_config: ClassVar[dict[str, Any]] = {"epochs": 2, "hidden": 8, "eval_every": 1, "n_gen": 40,
                                                 "batch_size": 16}
    contract_data: ClassVar[dict[str, Any]] = {"sample_shape": (3,), "dtype": "float32"}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        x_train = np.asarray(data.x_train, dtype=np.float64)
        self.shift, self.scale = column_scaler(x_train, cfg.scaler)
        self.x_train = self._to_model(data.x_train)
        self.means, self.weights, self.sigma = mixture_of(data)
        self.model = DenseVAE(x_train.shape[1], cfg.dimz, cfg.hidden, cfg.depth, likelihood="gaussian",
                              var_head=cfg.var_head).to(device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.eval_cache = EvalCache(cfg.eval_every, cfg.epochs)
        self.ceilings = {f"{k}_ceiling": v for k, v in self._sample_metrics(np.asarray(data.x_test)).items()
                         if k != "mode_score"}

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Labelled vectors ``[N, D]`` with every split non-empty and at least 15 training points.

        Raises:
            ValueError: images, another task, too few points, labels outside ``0..K-1``.
        """
        super().check_data(data, config)
        if data.x_train.ndim != 2:
            raise ValueError(f"gmm_vae trains on vectors [N, D]; dataset {data.name!r} has samples of shape "
                             f"{data.sample_shape} (use gmm3d)")
        if len(data.x_train) < 15 or len(data.x_test) < 15:
            raise ValueError(f"gmm_vae needs >= 15 train and test points (the elbow count tries k = 1..15); "
                             f"{data.name!r} has {len(data.x_train)} and {len(data.x_test)}")
        if min(data.y_train.min(), data.y_test.min()) < 0:
            raise ValueError(f"gmm_vae needs the true component of every point; {data.name!r} has labels -1")

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch; ``train_loss`` is the epoch mean of the batch means (spec §2)."""
        cfg = self.config
        self.model.train()
        losses = []
        for idx in batches(len(self.x_train), cfg.batch_size, shuffle=True, generator=self.generator):
            x = self.x_train[idx].to(self.device)
            eps = torch.randn(len(idx), cfg.dimz, generator=self.generator).to(self.device)
            loss = training_loss(neg_elbo_terms(self.model, x, eps, cfg.var_x), cfg.loss, cfg.beta)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        return {"train_loss": float(np.mean(losses))}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """Every metric of the module docstring, every ``eval_every`` epochs (else the last)."""
        return self.eval_cache.get(iteration, lambda: self._evaluate(iteration))

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and the last metrics."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "last_eval": self.eval_cache.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.eval_cache.load_state_dict(state["last_eval"])

    def extra_results(self) -> dict[str, float]:
        """The ceilings and ``num_params``."""
        return {**self.ceilings, "num_params": float(count_params(self.model))}

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """``samples`` (generated vs true points, three 2-D projections), ``latent`` (test latent
        means coloured by true component) and ``latent_tsne`` (their t-SNE, perplexity 30, PCA
        init), each ``[3, H, W]`` in [0, 1]."""
        gen = self.generate(eval_generator(self.config.seed, iteration))
        mu = self._latent_means(self.data.x_test)
        return {"samples": sample_figure(np.asarray(self.data.x_test), gen, self.means),
                **latent_figures(mu, np.asarray(self.data.y_test), self.config.seed)}

    # -- internals ---------------------------------------------------------------------------------
    def _to_model(self, x: np.ndarray) -> torch.Tensor:
        """Data -> the model's (possibly standardised) float32 space, on the CPU."""
        return torch.as_tensor((np.asarray(x, np.float64) - self.shift) / self.scale, dtype=torch.float32)

    @torch.no_grad()
    def generate(self, gen: torch.Generator) -> np.ndarray:
        """``n_gen`` samples ``[n_gen, D]`` in the data's original space, drawn with ``gen``."""
        cfg = self.config
        self.model.eval()
        z = torch.randn(cfg.n_gen, cfg.dimz, generator=gen).to(self.device)
        params = self.model.decode(z)
        x = params if cfg.decode == "mean" else self.model.sample(params, cfg.var_x, gen)
        return x.cpu().double().numpy() * self.scale + self.shift

    @torch.no_grad()
    def _latent_means(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        return self.model.encode(self._to_model(x).to(self.device))[0].cpu().double().numpy()

    def _sample_metrics(self, x: np.ndarray) -> dict[str, float]:
        """The sample metrics of points ``x [n, D]`` in the data's original space."""
        out = sm.mode_metrics(x, self.means, self.weights, sigma=self.sigma, tau=0.1)
        ratios = sm.spread_ratios(x, self.data.x_train)
        scaled = (x - np.asarray(self.data.x_train).mean(0)) / np.asarray(self.data.x_train).std(0)
        return {"hq_fraction": out["hq_fraction"], "modes_captured": out["modes_captured"],
                "modes_covered_0p1": out["modes_covered"], "mode_kl": out["mode_kl"],
                "spread_ratio": float(ratios.mean()), "spread_ratio_min": float(ratios.min()),
                "elbow_k_raw": float(sm.elbow_k(x, seed=self.config.seed)),
                "elbow_k_scaled": float(sm.elbow_k(scaled, seed=self.config.seed)),
                "mode_score": out["modes_covered"] + out["hq_fraction"]}

    @torch.no_grad()
    def _evaluate(self, iteration: int) -> dict[str, float]:
        cfg = self.config
        gen = eval_generator(cfg.seed, iteration)
        result = self._sample_metrics(self.generate(gen))
        self.model.eval()
        x = self._to_model(self.data.x_test).to(self.device)
        eps = torch.randn(len(x), cfg.dimz, generator=gen).to(self.device)
        params, mu, var, _ = self.model(x, eps)
        recon = recon_nll(self.model, params, x, cfg.var_x)
        kl = kl_standard_normal(mu, var)
        # the density of the original data is the standardised one divided by prod(scale)
        log_jacobian = float(np.log(self.scale).sum())
        x_hat = params.cpu().double().numpy() * self.scale + self.shift
        mu_np = mu.cpu().double().numpy()
        result.update(test_elbo=float(-(recon + kl).mean()) - log_jacobian,
                      test_recon_nll=float(recon.mean()) + log_jacobian,
                      test_kl=float(kl.mean()),
                      test_mse=float(((x_hat - np.asarray(self.data.x_test, np.float64)) ** 2).mean()),
                      test_active_units=float(active_units(torch.from_numpy(mu_np))),
                      **latent_structure(mu_np, np.asarray(self.data.y_test), self.means.shape[0], cfg.seed))
        return result


def column_scaler(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(shift [D], scale [D])`` with ``scaled = (x - shift) / scale``: ``none`` (0, 1),
    ``standard`` (column mean, column std) or ``minmax`` (column min, column range), fitted on
    ``x [N, D]`` (the training split); a constant column keeps scale 1."""
    d = x.shape[1]
    if kind == "standard":
        return x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
    if kind == "minmax":
        span = x.max(0) - x.min(0)
        return x.min(0), np.where(span > 0, span, 1.0)
    return np.zeros(d), np.ones(d)


def mixture_of(data: DataBundle) -> tuple[np.ndarray, np.ndarray, float]:
    """``(means [K, D], weights [K], sigma)`` of the data's mixture: from ``meta`` (``gmm3d``),
    else estimated from the labelled training split (class means, class shares, pooled
    within-class standard deviation)."""
    meta = data.meta or {}
    if "means" in meta and "weights" in meta:
        return (np.asarray(meta["means"], np.float64), np.asarray(meta["weights"], np.float64),
                float(meta.get("sigma", 1.0)))
    x, y, k = np.asarray(data.x_train, np.float64), np.asarray(data.y_train), int(data.num_classes)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    means = np.stack([x[y == c].mean(0) if counts[c] else x.mean(0) for c in range(k)])
    sigma = float(np.sqrt(((x - means[y]) ** 2).mean()))
    return means, counts / counts.sum(), sigma


def latent_structure(mu: np.ndarray, labels: np.ndarray, k: int, seed: int) -> dict[str, float]:
    """``test_latent_nmi`` (NMI of ``labels`` vs ``KMeans(k, n_init=10)`` on ``mu``, scikit-learn)
    and ``test_latent_knn_purity`` (mean share of each point's 10 nearest neighbours in ``mu``
    with its label); spec §3.3. ``mu``: ``[N, d]``, ``labels``: ``[N]``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(k, len(mu)))
    assign = KMeans(k, n_init=10, random_state=seed).fit_predict(mu)
    n_nb = min(10, len(mu) - 1)
    _, nb = NearestNeighbors(n_neighbors=n_nb + 1).fit(mu).kneighbors(mu)
    purity = float((labels[nb[:, 1:]] == labels[:, None]).mean())
    return {"test_latent_nmi": float(normalized_mutual_info_score(labels, assign)),
            "test_latent_knn_purity": purity}


def _figure_tensor(fig) -> torch.Tensor:
    """A matplotlib figure -> ``[3, H, W]`` float tensor in [0, 1] (the figure is closed)."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


def sample_figure(true: np.ndarray, generated: np.ndarray, means: np.ndarray) -> torch.Tensor:
    """Generated (red) over true (grey) points and the true means (black crosses), in the three
    2-D projections of the first three dimensions, as a ``[3, H, W]`` image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = [(0, 1), (0, 2), (1, 2)] if true.shape[1] >= 3 else [(0, min(1, true.shape[1] - 1))]
    fig, axes = plt.subplots(1, len(dims), figsize=(4 * len(dims), 4), dpi=64, squeeze=False)
    for ax, (a, b) in zip(axes[0], dims):
        ax.scatter(true[:, a], true[:, b], s=3, c="0.6", label="true (test)")
        ax.scatter(generated[:, a], generated[:, b], s=3, c="tab:red", alpha=0.6, label="generated")
        ax.scatter(means[:, a], means[:, b], marker="x", c="k", s=40, label="true means")
        ax.set_xlabel(f"x{a + 1}")
        ax.set_ylabel(f"x{b + 1}")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _figure_tensor(fig)


def latent_figures(mu: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, torch.Tensor]:
    """``latent``: the latent means (first two PCA axes when dimz > 2) and ``latent_tsne``: their
    t-SNE (``sklearn.manifold.TSNE``, perplexity 30 or less, PCA init), coloured by true
    component (spec §3.3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    flat = mu if mu.shape[1] <= 2 else PCA(2, random_state=seed).fit_transform(mu)
    flat = np.column_stack([flat, np.zeros(len(flat))]) if flat.shape[1] == 1 else flat
    perplexity = float(min(30.0, max(2.0, (len(mu) - 1) / 3)))
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(mu)
    out = {}
    for tag, pts in (("latent", flat), ("latent_tsne", tsne)):
        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=64)
        ax.scatter(pts[:, 0], pts[:, 1], c=labels, cmap="tab10", s=4)
        ax.set_title(tag.replace("_", " ") + " (colour: true component)", fontsize=9)
        fig.tight_layout()
        out[tag] = _figure_tensor(fig)
    return out
