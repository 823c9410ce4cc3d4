"""The ``vae`` model family: standard VAE, beta-VAE and DERP-VAE in one multi-loss framework.

Model, loss and metrics follow ``shared/specs/derp_vae.md``; the runs reproduced are in
``shared/seeds/derp_vae_runs.md``. One iteration is one epoch over the training split, fed by the
tensor batch path of :mod:`sweeplab.kit.tensors` (no DataLoader). Which model a trial is
follows from its hyperparameters only: standard VAE ``beta=1, lambda_ks=0``; beta-VAE
``beta != 1, lambda_ks=0``; DERP-VAE ``beta=1, lambda_ks>0, num_probes=P``.

Reported: ``train_loss`` after every epoch; every evaluation metric of the spec on the test split
as ``test_*`` (and on the validation split as ``val_*`` when the job sets ``data.val_fraction``);
``n_samples`` prior samples scored by the dataset's reference classifier
(:mod:`sweeplab.metrics.reference_classifier`: ``class_coverage``, ``class_kl``,
``fd_classifier``, with their ceilings on real test images and ``reference_accuracy``; drawn after
the split metrics, which keep their values); ``num_params``. The loop adds ``iteration_seconds`` and ``train_seconds`` (which replaces the
family's former ``train_time_s``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.device import autocast
from sweeplab.kit.evaluation import EvalCache, EvalConfig, eval_generator
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.optim import (LRSchedule, OptimizerConfig, ScheduleConfig, build_optimizer,
                                clip_gradients, count_params)
from sweeplab.kit.tensors import batches, shared_tensor, to_float_images
from sweeplab.metrics import vae as vm
from sweeplab.metrics.convention import Metric, per_split
from sweeplab.metrics.reference_classifier import image_sample_metrics, reference_classifier
from sweeplab.models.vae import DerpVAE, LossWeights, VAEOutput, multi_loss

#: Metrics :meth:`VAEFamily.evaluate` computes on a split: (quantity, mode, unit, description);
#: reported as ``test_<quantity>`` and, with a validation split, ``val_<quantity>``.
_EVAL_METRICS: tuple[tuple[str, Literal["min", "max"], str, str], ...] = (
    ("ks_probe", "min", "ratio", "DERP statistic sqrt(n)*mean_i|i/n - Phi(s_(i))| averaged over probes and "
     "full eval batches of batch_size (the runs' 'KS Distance (train)'; floor ~0.32 for exact N(0,1))"),
    ("ks_eval", "min", "ratio", "runs' one-sided max_i|i/n - Phi(p_(i))|, mean over 10 fresh unit "
     "projections of all z"),
    ("ks_two_sided", "min", "ratio", "standard two-sided KS statistic vs N(0,1) (scipy.stats.kstest), same "
     "10 projections"),
    ("kl", "min", "nats", "mean per-sample KL(q(z|x) || N(0, I))"),
    ("accuracy", "max", "fraction", "classifier accuracy on the sampled z"),
    ("activation_rate", "max", "fraction", "runs' mean 1[sigma^2 > 0.005] over samples x dims (high = near prior)"),
    ("active_units", "max", "count", "Burda et al. 2016: dims with Var_x(E_q[z_j|x]) > 0.01"),
    ("class_separation", "max", "ratio", "trace(S_B)/trace(S_W) of sampled z"),
    ("recon_bce", "min", "nats", "mean per-sample reconstruction BCE summed over pixels"),
    ("elbo", "max", "nats", "mean per-sample single-sample ELBO (beta = 1)"),
)


@register_family
class VAEFamily(ModelFamily):
    """Standard VAE / beta-VAE / DERP-VAE with classifier and perceptual heads.

    Source: ``shared/specs/derp_vae.md``. Training (:mod:`sweeplab.kit.optim`): fused Adam with
    L2 ``weight_decay`` 1e-5, gradient-norm clipping at 1.0, ``ReduceLROnPlateau`` (patience 3,
    factor 0.5) stepped on the epoch's mean training loss, ``drop_last``. Evaluation runs in eval
    mode on the test split (and on the validation split as ``val_*`` when the job sets
    ``data.val_fraction``), with the reparameterisation noise and the random projections drawn
    from :func:`~sweeplab.kit.evaluation.eval_generator` seeded by ``(seed, iteration)``:
    evaluation never touches the training RNG, and a resumed trial evaluates exactly as an
    uninterrupted one. With ``amp: true`` on a GPU the model's forward passes run under bfloat16
    autocast; the losses and metrics are computed in float32 from their outputs.
    """

    name: ClassVar[str] = "vae"

    class Config(OptimizerConfig, ScheduleConfig, EvalConfig, FamilyConfig):
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
        optimizer: Literal["adam", "adamw", "sgd", "adadelta", "rmsprop"] = Field(
            "adam", description="adam (the spec; fused) | adamw | sgd | adadelta | rmsprop")
        weight_decay: float | None = Field(1e-5, ge=0, description="L2 weight decay (decoupled for adamw)")
        grad_clip: float | None = Field(1.0, gt=0, description="max global gradient L2 norm; null = off")
        lr_schedule: Literal["none", "plateau", "cosine"] = Field(
            "plateau", description="plateau: ReduceLROnPlateau on the epoch's mean training loss (the spec); "
                                   "cosine: CosineAnnealingLR over the run's optimizer steps")
        plateau_patience: int = Field(3, ge=0, description="ReduceLROnPlateau patience (epochs)")
        plateau_factor: float = Field(0.5, gt=0, lt=1, description="ReduceLROnPlateau factor")
        batch_size: int = Field(128, ge=2, description="training and evaluation batch size")
        epochs: int = Field(30, ge=1, description="iterations (one epoch each)")
        drop_last: bool = Field(True, description="skip the last short training batch")
        eval_projections: int = Field(10, ge=1, description="random unit projections of ks_eval/ks_two_sided")
        n_samples: int = Field(2000, ge=2, description="prior samples scored by the reference classifier "
                                                       "per evaluation (class_coverage, class_kl, fd_classifier)")
        reference_dir: str | None = Field(None, description="cache folder of the reference classifier "
                                                            "(default $SWEEPLAB_CACHE_DIR or ~/.cache/sweeplab)")

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "nats", "epoch mean of the multi-loss per sample (training mode)"),
        *(m for q, mode, unit, desc in _EVAL_METRICS for m in per_split(q, mode, unit, desc)),
        *image_sample_metrics(),
        Metric("num_params", "min", "count", "trainable parameters (a frozen phi not counted)"),
    )
    data_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    supports_amp: ClassVar[bool] = True
    renamed: ClassVar[dict[str, str]] = {**{q: f"test_{q}" for q, *_ in _EVAL_METRICS},
                                         "train_time_s": "train_seconds"}
    contract_config: ClassVar[dict[str, Any]] = {"epochs": 2, "hidden_dim": 8, "latent_dim": 2,
                                                 "batch_size": 16, "lambda_ks": 1.0, "num_probes": 2}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        self.model = DerpVAE(data.sample_shape, data.num_classes, arch=cfg.arch, hidden_dim=cfg.hidden_dim,
                             latent_dim=cfg.latent_dim, perceptual=cfg.perceptual).to(device)
        self.weights = LossWeights(cfg.beta, cfg.lambda_ks, cfg.cls_weight, cfg.perc_weight)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # fused Adam: the same update in one kernel per step, ~4x faster than the default on CPU
        self.optimizer = build_optimizer(self.params, cfg, fused=True)
        self.schedule = LRSchedule(self.optimizer, cfg, total_steps=cfg.epochs * self._steps_per_epoch())
        self.x_train, self.y_train = shared_tensor(data.x_train), shared_tensor(data.y_train)
        self.fixed_probes: torch.Tensor | None = None
        self.eval_cache = EvalCache(cfg.eval_every, cfg.epochs)
        self.reference = reference_classifier(data, cfg.reference_dir)
        self.ceilings = {f"{k}_ceiling": v for k, v in self.reference.ceilings(cfg.n_samples).items()}

    # -- ModelFamily -----------------------------------------------------------------------------
    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Reject data a VAE with Bernoulli decoder and classifier head cannot use.

        Raises:
            ValueError: for data of another task, non-image (tabular) data, pixel values outside
                [0, 1] in float images, missing labels (``-1``), fewer than 2 classes, or an
                empty split.
        """
        super().check_data(data, config)
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

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch of the multi-loss over shuffled training batches, then one step of the plateau
        schedule on the epoch's mean loss.

        Returns:
            ``train_loss``: the epoch mean of the total loss per sample (nats-scaled multi-loss).
        """
        cfg = self.config
        self.model.train()
        n = len(self.x_train)
        drop_last = cfg.drop_last and n >= cfg.batch_size
        total, count = 0.0, 0
        for idx in batches(n, cfg.batch_size, shuffle=True, generator=self.generator, drop_last=drop_last):
            x = to_float_images(self.x_train[idx], self.device)
            y = self.y_train[idx].to(self.device)
            directions = self._training_probes()
            terms = multi_loss(self.model, self._forward(x), x, y, directions, self.weights)
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            clip_gradients(self.params, cfg.grad_clip)
            self.optimizer.step()
            self.schedule.after_step()
            total += float(terms["loss"].detach()) * len(idx)
            count += len(idx)
        mean_loss = total / max(count, 1)
        self.schedule.after_iteration(mean_loss)
        return {"train_loss": mean_loss}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """``test_*`` metrics (and ``val_*`` ones) every ``eval_every`` epochs and after the last;
        the last computed values otherwise."""
        return self.eval_cache.get(iteration, lambda: self._evaluate_splits(iteration))

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser, schedule, the fixed probes and the last metrics."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "fixed_probes": None if self.fixed_probes is None else self.fixed_probes.cpu(),
            "last_eval": self.eval_cache.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; a checkpoint written before the kit (plateau
        state under ``scheduler``, metrics under their old names) loads too."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])
        elif state.get("scheduler") is not None and self.schedule.plateau is not None:
            self.schedule.plateau.load_state_dict(state["scheduler"])
        probes = state.get("fixed_probes")
        self.fixed_probes = None if probes is None else probes.to(self.device)
        last = state.get("last_eval", {})
        self.eval_cache.load_state_dict({self.renamed.get(k, k): v for k, v in last.items()})

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """TensorBoard images: ``reconstructions`` (8 fixed test images over their reconstructions
        from the posterior means) and ``prior_samples`` (16 decodings of ``z ~ N(0, I)`` with a fixed
        seed), each a ``[3, H, W]`` grid in [0, 1] made by ``torchvision.utils.make_grid``."""
        from torchvision.utils import make_grid

        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.config.amp):
            k = min(8, len(self.data.x_test))
            x = to_float_images(shared_tensor(self.data.x_test[:k]), self.device)
            mu, _ = self.model.encoder(x)
            recon = self.model.decode(mu).float()
            gen = torch.Generator().manual_seed(self.config.seed)
            z = torch.randn(16, self.config.latent_dim, generator=gen).to(self.device)
            samples = self.model.decode(z).float()
        return {"reconstructions": make_grid(torch.cat([x, recon]).cpu(), nrow=k, padding=2),
                "prior_samples": make_grid(samples.cpu(), nrow=8, padding=2)}

    def extra_results(self) -> dict[str, float]:
        """``num_params`` (trainable parameters, a frozen phi not counted), the sample metrics'
        ceilings and ``reference_accuracy``."""
        return {**self.ceilings, "reference_accuracy": self.reference.test_accuracy,
                "num_params": float(count_params(self.model))}

    # -- internals ---------------------------------------------------------------------------------
    def _steps_per_epoch(self) -> int:
        """Optimizer steps of one epoch (``drop_last`` skips a final short batch)."""
        n, bs = len(self.data.x_train), self.config.batch_size
        return n // bs if self.config.drop_last and n >= bs else -(-n // bs)

    def _forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> VAEOutput:
        """``model(x, eps)`` under the ``amp`` autocast, its outputs as float32 (a no-op on the
        CPU); the losses and metrics are computed outside autocast."""
        with autocast(self.device, self.config.amp):
            out = self.model(x, eps=eps)
        return VAEOutput(**{f.name: getattr(out, f.name).float() for f in dataclasses.fields(out)})

    def _training_probes(self) -> torch.Tensor:
        """Probes of the current step: the kept ones (``fixed``; drawn at the first batch) or
        fresh ones (``resample``), both from the checkpointed family generator."""
        cfg = self.config
        if cfg.probes == "resample":
            return vm.probes(cfg.num_probes, cfg.latent_dim, self.generator, device=self.device)
        if self.fixed_probes is None:
            self.fixed_probes = vm.probes(cfg.num_probes, cfg.latent_dim, self.generator, device=self.device)
        return self.fixed_probes

    def _evaluate_splits(self, iteration: int) -> dict[str, float]:
        """``test_*`` and (with a validation split) ``val_*`` metrics after ``iteration``, both
        drawing from one :func:`~sweeplab.kit.evaluation.eval_generator` of ``(seed, iteration)``."""
        gen = eval_generator(self.config.seed, iteration)
        test = self._evaluate_split(self.data.x_test, self.data.y_test, gen)
        result = {f"test_{k}": v for k, v in test.items()}
        if self.data.x_val is not None and len(self.data.x_val):
            val = self._evaluate_split(self.data.x_val, self.data.y_val, gen)
            result.update({f"val_{k}": v for k, v in val.items()})
        result.update(self.reference.score(self._prior_samples(self.config.n_samples, gen)))
        return result

    @torch.no_grad()
    def _prior_samples(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` decodings ``[n, C, H, W]`` in (0, 1) of ``z ~ N(0, I)`` drawn from ``gen`` after the
        split metrics (so those keep their values), eval mode, on the CPU."""
        self.model.eval()
        out = []
        for start in range(0, n, 500):
            z = torch.randn(min(500, n - start), self.config.latent_dim, generator=gen).to(self.device)
            with autocast(self.device, self.config.amp):
                out.append(self.model.decode(z).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def _evaluate_split(self, x_np: np.ndarray, y_np: np.ndarray, gen: torch.Generator) -> dict[str, float]:
        """Every quantity of ``_EVAL_METRICS`` on one split (unprefixed), in eval mode (see the
        class docstring)."""
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
            out = self._forward(x, eps)
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
