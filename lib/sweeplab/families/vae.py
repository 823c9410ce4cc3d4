"""The ``vae`` model family: standard VAE, beta-VAE and DERP-VAE in one multi-loss framework.

Model, loss and metrics follow ``shared/specs/derp_vae.md``; the runs reproduced are in
``shared/seeds/derp_vae_runs.md``. One iteration is one epoch over the training split, fed by the
tensor batch path of :mod:`sweeplab.trainables.base` (no DataLoader). Which model a trial is
follows from its hyperparameters only: standard VAE ``beta=1, lambda_ks=0``; beta-VAE
``beta != 1, lambda_ks=0``; DERP-VAE ``beta=1, lambda_ks>0, num_probes=P``.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from sweeplab.datasets.base import DataBundle
from sweeplab.metrics import vae as vm
from sweeplab.models.vae import DerpVAE, LossWeights, multi_loss
from sweeplab.trainables.base import (FamilyConfig, ModelFamily, batches, register_family,
                                      shared_tensor, to_float_images)

#: Metrics computed by :meth:`VAEFamily.evaluate` on a split (test, and ``val_*`` when present).
_EVAL_METRICS: dict[str, tuple[str, str]] = {
    "ks_probe": ("min", "DERP statistic sqrt(n)*mean_i|i/n - Phi(s_(i))| averaged over probes and full "
                 "eval batches of batch_size (the runs' 'KS Distance (train)'; floor ~0.32 for exact N(0,1))"),
    "ks_eval": ("min", "runs' one-sided max_i|i/n - Phi(p_(i))|, mean over 10 fresh unit projections of all z"),
    "ks_two_sided": ("min", "standard two-sided KS statistic vs N(0,1) (scipy.stats.kstest), same 10 projections"),
    "kl": ("min", "mean per-sample KL(q(z|x) || N(0, I)) in nats"),
    "accuracy": ("max", "classifier accuracy on the sampled z, fraction"),
    "activation_rate": ("max", "runs' mean 1[sigma^2 > 0.005] over samples x dims, fraction (high = near prior)"),
    "active_units": ("max", "Burda et al. 2016: dims with Var_x(E_q[z_j|x]) > 0.01, count"),
    "class_separation": ("max", "trace(S_B)/trace(S_W) of sampled z"),
    "recon_bce": ("min", "mean per-sample reconstruction BCE summed over pixels, nats"),
    "elbo": ("max", "mean per-sample single-sample ELBO (beta = 1), nats"),
}


@register_family
class VAEFamily(ModelFamily):
    """Standard VAE / beta-VAE / DERP-VAE with classifier and perceptual heads.

    Source: ``shared/specs/derp_vae.md``. Training: Adam (L2 ``weight_decay``), gradient-norm
    clipping, ``ReduceLROnPlateau`` stepped on the epoch's mean training loss, ``drop_last``.
    Evaluation runs in eval mode on the test split (and on the validation split as ``val_*`` when
    the job sets ``data.val_fraction``), with the reparameterisation noise and the random
    projections drawn from a generator seeded by ``(seed, iteration)``: evaluation never touches
    the training RNG, and a resumed trial evaluates exactly as an uninterrupted one.
    """

    name: ClassVar[str] = "vae"

    class Config(FamilyConfig):
        """Hyperparameters of the ``vae`` family. Defaults are the spec's CIFAR-10 settings."""

        arch: Literal["mlp", "conv"] = Field("mlp", description="mlp = the runs' FC nets; conv = DCGAN-style")
        beta: float = Field(1.0, ge=0, description="weight of KL_sum/B (1 = standard VAE)")
        lambda_ks: float = Field(0.0, ge=0, description="weight of the DERP term (0 = no DERP)")
        num_probes: int = Field(5, ge=1, description="P, random probes of the DERP term and ks_probe")
        probes: Literal["fixed", "resample"] = Field(
            "fixed", description="fixed = drawn once at the first batch and kept (the runs); resample = every step")
        cls_weight: float = Field(0.5, ge=0, description="weight of the classifier cross-entropy")
        perceptual: Literal["trainable", "frozen", "off"] = Field(
            "trainable", description="phi trained jointly (the runs; collapses), kept random, or no term")
        perc_weight: float = Field(0.3, ge=0, description="weight of MSE(phi(x), phi(x_hat))")
        latent_dim: int = Field(4, ge=1, description="d")
        hidden_dim: int = Field(256, ge=2, multiple_of=2, description="h (even)")
        lr: float = Field(1e-3, gt=0, description="Adam learning rate")
        weight_decay: float = Field(1e-5, ge=0, description="Adam L2 weight decay")
        batch_size: int = Field(128, ge=2, description="training and evaluation batch size")
        epochs: int = Field(30, ge=1, description="iterations (one epoch each)")
        eval_every: int = Field(1, ge=1, description="evaluate every N epochs (and at the last); "
                                                     "other epochs repeat the last metrics")
        grad_clip: float | None = Field(1.0, gt=0, description="max global gradient L2 norm; null = off")
        plateau_patience: int = Field(3, ge=0, description="ReduceLROnPlateau patience (epochs)")
        plateau_factor: float = Field(0.5, gt=0, lt=1, description="ReduceLROnPlateau factor")
        drop_last: bool = Field(True, description="skip the last short training batch")
        eval_projections: int = Field(10, ge=1, description="random unit projections of ks_eval/ks_two_sided")

    metrics: ClassVar[dict[str, tuple[str, str]]] = {
        "train_loss": ("min", "epoch mean of the multi-loss (training mode)"),
        "train_time_s": ("min", "cumulative wall-clock training seconds, evaluation excluded"),
        **_EVAL_METRICS,
        **{f"val_{k}": (mode, desc + " (validation split; only when data.val_fraction > 0)")
           for k, (mode, desc) in _EVAL_METRICS.items()},
    }

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        self.model = DerpVAE(data.sample_shape, data.num_classes, arch=cfg.arch, hidden_dim=cfg.hidden_dim,
                             latent_dim=cfg.latent_dim, perceptual=cfg.perceptual).to(device)
        self.weights = LossWeights(cfg.beta, cfg.lambda_ks, cfg.cls_weight, cfg.perc_weight)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # fused Adam: the same update in one kernel per step, ~4x faster than the default on CPU
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
        self.x_train, self.y_train = shared_tensor(data.x_train), shared_tensor(data.y_train)
        self.fixed_probes: torch.Tensor | None = None
        self.last_eval: dict[str, float] = {}
        self.train_time_s = 0.0

    # -- ModelFamily -----------------------------------------------------------------------------
    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Reject data a VAE with Bernoulli decoder and classifier head cannot use.

        Raises:
            ValueError: for non-image (tabular) data, pixel values outside [0, 1] in float images,
                missing labels (``-1``), fewer than 2 classes, or an empty split.
        """
        if not data.is_image:
            raise ValueError(
                f"trainable 'vae' needs image data [N, C, H, W]; dataset {data.name!r} has samples of shape "
                f"{data.sample_shape} (tabular). Use an image dataset such as cifar10, celeba or fashion_mnist.")
        for split, x in (("train", data.x_train), ("test", data.x_test)):
            if len(x) == 0:
                raise ValueError(f"trainable 'vae': the {split} split of {data.name!r} is empty")
            if x.dtype != np.uint8 and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
                raise ValueError(f"trainable 'vae' has a Bernoulli (BCE) decoder: float images must lie in "
                                 f"[0, 1], but the {split} split of {data.name!r} spans "
                                 f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")
        if data.num_classes < 2 or (data.y_train < 0).any() or (data.y_test < 0).any():
            raise ValueError(f"trainable 'vae' trains a classifier on z and reports accuracy: dataset "
                             f"{data.name!r} needs class labels 0..C-1 with C >= 2 (has num_classes="
                             f"{data.num_classes}, labels -1 mean 'no label')")

    @property
    def num_iterations(self) -> int:
        """``epochs``."""
        return self.config.epochs

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch of the multi-loss over shuffled training batches.

        Returns:
            ``train_loss`` (epoch mean of the total loss) and ``train_time_s`` (cumulative seconds).
        """
        t0 = time.perf_counter()
        cfg = self.config
        self.model.train()
        n = len(self.x_train)
        drop_last = cfg.drop_last and n >= cfg.batch_size
        total, count = 0.0, 0
        for idx in batches(n, cfg.batch_size, shuffle=True, generator=self.generator, drop_last=drop_last):
            x = to_float_images(self.x_train[idx], self.device)
            y = self.y_train[idx].to(self.device)
            directions = self._training_probes()
            out = self.model(x)
            terms = multi_loss(self.model, out, x, y, directions, self.weights)
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            total += float(terms["loss"].detach()) * len(idx)
            count += len(idx)
        mean_loss = total / max(count, 1)
        self.scheduler.step(mean_loss)
        self.train_time_s += time.perf_counter() - t0
        return {"train_loss": mean_loss, "train_time_s": self.train_time_s}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """Test-set metrics (and ``val_*`` ones) every ``eval_every`` epochs and after the last;
        the last computed values otherwise."""
        due = (iteration + 1) % self.config.eval_every == 0 or iteration + 1 == self.num_iterations
        if due or not self.last_eval:
            gen = self._eval_generator(iteration)
            result = self._evaluate_split(self.data.x_test, self.data.y_test, gen)
            if self.data.x_val is not None and len(self.data.x_val):
                val = self._evaluate_split(self.data.x_val, self.data.y_val, gen)
                result.update({f"val_{k}": v for k, v in val.items()})
            self.last_eval = result
        return dict(self.last_eval)

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser, scheduler, the fixed probes, the last metrics and the training time."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "fixed_probes": None if self.fixed_probes is None else self.fixed_probes.cpu(),
            "last_eval": dict(self.last_eval),
            "train_time_s": self.train_time_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        probes = state.get("fixed_probes")
        self.fixed_probes = None if probes is None else probes.to(self.device)
        self.last_eval = {k: float(v) for k, v in state.get("last_eval", {}).items()}
        self.train_time_s = float(state.get("train_time_s", 0.0))

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """TensorBoard images: ``reconstructions`` (8 fixed test images over their reconstructions
        from the posterior means) and ``prior_samples`` (16 decodings of ``z ~ N(0, I)`` with a fixed
        seed), each a ``[3, H, W]`` grid in [0, 1] made by ``torchvision.utils.make_grid``."""
        from torchvision.utils import make_grid

        self.model.eval()
        with torch.no_grad():
            k = min(8, len(self.data.x_test))
            x = to_float_images(shared_tensor(self.data.x_test[:k]), self.device)
            mu, _ = self.model.encoder(x)
            recon = self.model.decode(mu)
            gen = torch.Generator().manual_seed(self.config.seed)
            z = torch.randn(16, self.config.latent_dim, generator=gen).to(self.device)
            samples = self.model.decode(z)
        return {"reconstructions": make_grid(torch.cat([x, recon]).cpu(), nrow=k, padding=2),
                "prior_samples": make_grid(samples.cpu(), nrow=8, padding=2)}

    def extra_results(self) -> dict[str, float]:
        """``num_params``: trainable parameters (a frozen phi not counted)."""
        return {"num_params": float(sum(p.numel() for p in self.model.parameters() if p.requires_grad))}

    # -- internals ---------------------------------------------------------------------------------
    def _training_probes(self) -> torch.Tensor:
        """Probes of the current step: the kept ones (``fixed``; drawn at the first batch) or
        fresh ones (``resample``), both from the checkpointed family generator."""
        cfg = self.config
        if cfg.probes == "resample":
            return vm.probes(cfg.num_probes, cfg.latent_dim, self.generator, device=self.device)
        if self.fixed_probes is None:
            self.fixed_probes = vm.probes(cfg.num_probes, cfg.latent_dim, self.generator, device=self.device)
        return self.fixed_probes

    def _eval_generator(self, iteration: int) -> torch.Generator:
        """A CPU generator seeded by ``(seed, iteration)``, independent of the training RNG."""
        return torch.Generator().manual_seed(int(self.config.seed) * 1_000_003 + int(iteration) + 17)

    @torch.no_grad()
    def _evaluate_split(self, x_np: np.ndarray, y_np: np.ndarray, gen: torch.Generator) -> dict[str, float]:
        """Every metric of ``_EVAL_METRICS`` on one split, in eval mode (see the class docstring)."""
        cfg = self.config
        self.model.eval()
        x_all, y_all = shared_tensor(x_np), torch.as_tensor(y_np)
        n = len(x_all)
        mus, logvars, zs, correct = [], [], [], 0
        recon_sum = kl_sum = elbo_sum = 0.0
        probe_stats: list[float] = []
        for idx in batches(n, cfg.batch_size, shuffle=False):
            x = to_float_images(x_all[idx], self.device)
            y = y_all[idx].to(self.device)
            eps = torch.randn(len(idx), cfg.latent_dim, generator=gen).to(self.device)
            out = self.model(x, eps=eps)
            recon_sum += float(vm.recon_bce(out.x_hat, x).sum())
            kl_sum += float(vm.kl_gaussian(out.mu, out.logvar).sum())
            elbo_sum += float(vm.elbo(out.x_hat, x, out.mu, out.logvar).sum())
            correct += int((out.logits.argmax(dim=1) == y).sum())
            # ks_probe's floor depends on n: use full batches only, unless there is no full batch.
            if len(idx) == cfg.batch_size or n < cfg.batch_size:
                if cfg.probes == "fixed" and self.fixed_probes is not None:
                    directions = self.fixed_probes
                else:
                    directions = vm.probes(cfg.num_probes, cfg.latent_dim, gen, device=self.device)
                probe_stats.append(float(vm.ks_probe(out.z, directions)))
            mus.append(out.mu.cpu())
            logvars.append(out.logvar.cpu())
            zs.append(out.z.cpu())
        mu, logvar, z = torch.cat(mus), torch.cat(logvars), torch.cat(zs)
        directions = vm.probes(cfg.eval_projections, cfg.latent_dim, gen, dtype=z.dtype)
        return {
            "ks_probe": float(np.mean(probe_stats)),
            "ks_eval": vm.ks_eval(z, directions),
            "ks_two_sided": float(vm.ks_two_sided(z @ directions.T).mean()),
            "kl": kl_sum / n,
            "accuracy": correct / n,
            "activation_rate": vm.activation_rate(logvar),
            "active_units": float(vm.active_units(mu)) if n >= 2 else float("nan"),
            "class_separation": vm.class_separation(z, y_all),
            "recon_bce": recon_sum / n,
            "elbo": elbo_sum / n,
        }
