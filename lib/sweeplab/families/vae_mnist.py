"""``vae_mnist``: the course report's VAE on MNIST-like images, with a categorical, Bernoulli or
Gaussian likelihood, scored like the ``gan`` family so the report's GAN-vs-VAE question (its §4.3
Q4) gets numbers on similar fully connected backbones.

Source: ``../shared/specs/ann_course.md`` §9 (the report is ``../shared/seeds/ann_course_report.md``
§4.3): ``784 -> 300 -> (mu, log sigma²)(600)`` and back (latent wider than the hidden layer, as
given), batch 3,000, Adam 1e-3, 100 epochs; ``Categorical(x | theta(z))``, ``theta =
softmax(NN(z))`` (Tomczak 2022), with Bernoulli and Gaussian likelihoods as options. The model is
:class:`~sweeplab.models.gmm_vae.DenseVAE` (``var_head: logvar``).

One iteration is one epoch over the training images (pixels in [0, 1], flattened) in shuffled
batches. Reported: ``train_loss`` (epoch mean of the batch's ``-ELBO`` with ``beta``, nats per
image); on the test split every ``eval_every`` epochs ``test_elbo`` (single-sample ELBO, beta 1),
its parts ``test_recon_nll`` and ``test_kl``, ``test_active_units``; ``n_samples`` images decoded
from ``z ~ N(0, I)`` (the likelihood's mean, or a draw with ``decode: sample``) scored by the
reference classifier (:mod:`sweeplab.metrics.reference_classifier`): ``class_coverage``,
``class_kl``, ``fd_classifier``, with their ceilings on real test images, ``reference_accuracy``,
``num_params``. TensorBoard: test images over their reconstructions, and samples from fixed codes.

Likelihoods are not comparable in nats: the categorical one is a probability over ``num_vals``
grey levels, the Bernoulli one treats grey pixels as probabilities of binary pixels, the
Gaussian one is a density. ``num_vals`` 256 (all grey levels) makes the output layer 60 M
weights: use a GPU for it; the default 17 is Tomczak's 0..16 levels.
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
from sweeplab.kit.tensors import batches, shared_tensor, to_float_images
from sweeplab.metrics.convention import Metric
from sweeplab.metrics.vae import active_units
from sweeplab.metrics.reference_classifier import image_sample_metrics, reference_classifier
from sweeplab.models.gmm_vae import DenseVAE, kl_standard_normal, recon_nll


@register_family
class VAEMNISTFamily(ModelFamily):
    """The course VAE on images (see the module docstring)."""

    name: ClassVar[str] = "vae_mnist"

    class Config(OptimizerConfig, EvalConfig, FamilyConfig):
        """Hyperparameters; defaults are the report's (latent 600, middle 300, batch 3,000, 1e-3)."""

        latent_dim: int = Field(600, ge=1, description="size of z")
        middle_dim: int = Field(300, ge=1, description="width of the hidden layer(s)")
        depth: int = Field(1, ge=1, description="hidden layers of the encoder and of the decoder")
        likelihood: Literal["categorical", "bernoulli", "gaussian"] = Field(
            "categorical", description="p(x|z): categorical over num_vals grey levels (the report), "
                                       "Bernoulli (BCE) or Gaussian with variance var_x")
        num_vals: int = Field(17, ge=2, description="grey levels of the categorical likelihood (256 = all)")
        var_x: float = Field(0.1, gt=0, description="variance of the Gaussian likelihood")
        beta: float = Field(1.0, ge=0, description="weight of the KL term in the training loss")
        decode: Literal["mean", "sample"] = Field("mean", description="samples are the likelihood's mean "
                                                                      "or a draw from it")
        batch_size: int = Field(3000, ge=1, description="training batch (the report's 3,000)")
        epochs: int = Field(100, ge=1, description="epochs (= iterations)")
        n_samples: int = Field(10000, ge=2, description="generated images scored per evaluation")
        reference_dir: str | None = Field(None, description="cache folder of the reference classifier")

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "nats", "epoch mean of the batch-mean -ELBO (with beta) per image"),
        Metric("test_elbo", "max", "nats", "single-sample ELBO per test image (beta 1)"),
        Metric("test_recon_nll", "min", "nats", "-log p(x|z) per test image"),
        Metric("test_kl", "min", "nats", "KL(q(z|x) || N(0, I)) per test image"),
        Metric("test_active_units", "max", "count", "Burda et al. 2016: dims with Var_x(mu_j(x)) > 0.01"),
        *image_sample_metrics(),
        Metric("num_params", "min", "count", "trainable parameters"),
    )
    data_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    contract_config: ClassVar[dict[str, Any]] = {"epochs": 2, "latent_dim": 4, "middle_dim": 8, "batch_size": 16,
                                                 "n_samples": 32, "num_vals": 5}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        self.in_dim = int(np.prod(data.sample_shape))
        self.model = DenseVAE(self.in_dim, cfg.latent_dim, cfg.middle_dim, cfg.depth, likelihood=cfg.likelihood,
                              num_vals=cfg.num_vals, var_head="logvar").to(device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.x_train, self.x_test = shared_tensor(data.x_train), shared_tensor(data.x_test)
        self.reference = reference_classifier(data, cfg.reference_dir)
        self.ceilings = {f"{k}_ceiling": v for k, v in self.reference.ceilings(cfg.n_samples).items()}
        self.eval_cache = EvalCache(cfg.eval_every, cfg.epochs)

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Labelled images ``[N, C, H, W]`` (uint8, or float in [0, 1]) with >= 2 classes.

        Raises:
            ValueError: another task, vectors, float pixels outside [0, 1], missing labels.
        """
        super().check_data(data, config)
        if not data.is_image:
            raise ValueError(f"vae_mnist models images [N, C, H, W]; dataset {data.name!r} has samples of shape "
                             f"{data.sample_shape} (use mnist or fashion_mnist)")
        if data.x_train.dtype != np.uint8 and (float(data.x_train.min()) < 0 or float(data.x_train.max()) > 1):
            raise ValueError(f"vae_mnist needs pixels in [0, 1] (or uint8); {data.name!r} spans "
                             f"[{float(data.x_train.min()):.3g}, {float(data.x_train.max()):.3g}]")
        if data.num_classes < 2 or (data.y_train < 0).any() or (data.y_test < 0).any():
            raise ValueError(f"vae_mnist scores its samples with a reference classifier trained on the labels: "
                             f"dataset {data.name!r} needs labels 0..C-1 with C >= 2")

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return to_float_images(x, self.device).reshape(len(x), -1)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch of ``recon + beta * KL`` (batch means); returns ``train_loss``."""
        cfg = self.config
        self.model.train()
        total, count = 0.0, 0
        for idx in batches(len(self.x_train), cfg.batch_size, shuffle=True, generator=self.generator):
            x = self._flat(self.x_train[idx])
            eps = torch.randn(len(idx), cfg.latent_dim, generator=self.generator).to(self.device)
            params, mu, var, _ = self.model(x, eps)
            loss = (recon_nll(self.model, params, x, cfg.var_x) + cfg.beta * kl_standard_normal(mu, var)).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        return {"train_loss": total / max(count, 1)}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """Test ELBO and its parts, active units, and the samples' scores (module docstring)."""
        return self.eval_cache.get(iteration, lambda: self._evaluate(iteration))

    @torch.no_grad()
    def _evaluate(self, iteration: int) -> dict[str, float]:
        cfg = self.config
        gen = eval_generator(cfg.seed, iteration)
        self.model.eval()
        recon = kl = 0.0
        mus = []
        for idx in batches(len(self.x_test), 1000, shuffle=False):
            x = self._flat(self.x_test[idx])
            eps = torch.randn(len(idx), cfg.latent_dim, generator=gen).to(self.device)
            params, mu, var, _ = self.model(x, eps)
            recon += float(recon_nll(self.model, params, x, cfg.var_x).sum())
            kl += float(kl_standard_normal(mu, var).sum())
            mus.append(mu.cpu().double().numpy())
        n = len(self.x_test)
        scores = self.reference.score(self.generate(cfg.n_samples, gen))
        return {"test_elbo": -(recon + kl) / n, "test_recon_nll": recon / n, "test_kl": kl / n,
                "test_active_units": float(active_units(torch.from_numpy(np.concatenate(mus)))) if n >= 2 else float("nan"),
                **scores}

    @torch.no_grad()
    def generate(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1] decoded from ``z ~ N(0, I)`` drawn with ``gen``."""
        cfg = self.config
        self.model.eval()
        out = []
        for start in range(0, n, 1000):
            z = torch.randn(min(1000, n - start), cfg.latent_dim, generator=gen).to(self.device)
            params = self.model.decode(z)
            x = self.model.mean(params) if cfg.decode == "mean" else self.model.sample(params, cfg.var_x, gen)
            out.append(x.clamp(0, 1).cpu())
        return torch.cat(out).view(n, *self.data.sample_shape)

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
        """Ceilings, ``reference_accuracy`` and ``num_params``."""
        return {**self.ceilings, "reference_accuracy": self.reference.test_accuracy,
                "num_params": float(count_params(self.model))}

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """``reconstructions`` (8 test images over their posterior-mean reconstructions) and
        ``prior_samples`` (64 decodings of codes fixed by the seed), ``[3, H, W]`` grids."""
        from torchvision.utils import make_grid

        self.model.eval()
        with torch.no_grad():
            x = self._flat(self.x_test[:8])
            mu, _ = self.model.encode(x)
            recon = self.model.mean(self.model.decode(mu)).clamp(0, 1).view(len(x), *self.data.sample_shape)
            samples = self.generate(64, torch.Generator().manual_seed(self.config.seed))
        grids = {"reconstructions": make_grid(torch.cat([x.view_as(recon), recon]).cpu(), nrow=len(x), padding=2),
                 "prior_samples": make_grid(samples, nrow=8, padding=2)}
        return {k: g if g.shape[0] == 3 else g.repeat(3, 1, 1) for k, g in grids.items()}
