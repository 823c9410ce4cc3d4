"""The ``variational_mnist`` model family: the conjugated mixture model clustering MNIST.

Model, objective, initialisation and metrics follow ``shared/specs/variational_mnist.md``; the
runs reproduced are in ``shared/seeds/variational_mnist_runs.md``. Training is step based: one
Ray Tune ``training_iteration`` is ``steps_per_iteration`` Adam steps on batches drawn with
replacement, so ASHA can stop a bad configuration long before its ``steps`` budget is spent.
Images are quantised to Binomial counts ``x = round(pixel · n / 255)`` with ``n = pixel_levels``
(16).

Reported: ``train_loss``, ``train_elbo``, ``current_beta``, ``current_lr``, ``rho_norm`` and
``step`` after every iteration; ``test_nmi``, ``test_cluster_accuracy``,
``test_active_clusters``, ``test_elbo``, ``test_kl`` (and their ``val_*`` twins with a
validation split), ``r2`` and ``eval_step`` from the last evaluation; ``num_params``. The loop
adds ``iteration_seconds`` and ``train_seconds``. No mixed-precision path (``amp`` is refused):
the Monte-Carlo ELBO and the conjugation penalty need float32.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.evaluation import EvalCache, EvalConfig, eval_generator
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.optim import (LRSchedule, OptimizerConfig, ScheduleConfig, build_optimizer,
                                clip_gradients, count_params)
from sweeplab.metrics import clustering as cm
from sweeplab.metrics.convention import Metric, per_split
from sweeplab.models.exponential_family import binomial_log_base_measure
from sweeplab.models.variational_mnist import ConjugatedMixture

#: Metrics :meth:`VariationalMNISTFamily.evaluate` computes on a split: (quantity, mode, unit,
#: description); reported as ``test_<quantity>`` and, with a validation split, ``val_<quantity>``.
_EVAL_METRICS: tuple[tuple[str, Literal["min", "max"], str, str], ...] = (
    ("nmi", "max", "ratio", "sklearn normalized_mutual_info_score(labels, argmax_k q(k|x))"),
    ("cluster_accuracy", "max", "fraction", "accuracy after mapping each cluster to its majority label"),
    ("active_clusters", "max", "count", "clusters that at least one image is assigned to (argmax)"),
    ("elbo", "max", "nats", "mean ELBO per image (beta = 1; E_q[psi] by Monte Carlo)"),
    ("kl", "min", "nats", "mean exact KL(q(y,k|x) || p(y,k)) per image"),
)


def quantise(images: np.ndarray, levels: int = 16) -> np.ndarray:
    """Binomial counts of the spec: ``x = round(pixel · levels / 255)``, flattened.

    Args:
        images: ``uint8`` ``[N, C, H, W]`` with values 0..255.
        levels: Binomial trials per pixel ``n`` (16).

    Returns:
        ``uint8`` ``[N, C·H·W]`` with values in ``0..levels`` (no ties occur: ``255`` is odd).
    """
    flat = images.reshape(len(images), -1).astype(np.float32)
    return np.rint(flat * (levels / 255.0)).astype(np.uint8)


@register_family
class VariationalMNISTFamily(ModelFamily):
    """The conjugated mixture model (``shared/specs/variational_mnist.md``) as a sweepable family.

    Training (:mod:`sweeplab.kit.optim`): fused Adam, learning rate
    ``lr · min(1, (step + 1) / lr_warmup_steps)`` (:class:`~sweeplab.kit.optim.LRSchedule`), then
    constant; ``β = min(1, step / kl_warmup_steps)`` weights both the KL and the conjugation
    penalty. Evaluation uses the test split (the first ``eval_limit`` images when set) and, when
    the job sets ``data.val_fraction``, the validation split as ``val_*``; its Monte-Carlo draws
    come from :func:`~sweeplab.kit.evaluation.eval_generator` seeded by ``(seed, step)``, so
    evaluation never touches the training RNG and a resumed trial evaluates exactly as an
    uninterrupted one. Iterations between evaluations repeat the last evaluated metrics
    (``eval_step`` says when they were computed).
    """

    name: ClassVar[str] = "variational_mnist"

    class Config(OptimizerConfig, ScheduleConfig, EvalConfig, FamilyConfig):
        """Hyperparameters of ``variational_mnist``; defaults are the best run (run 37)."""

        n_latent: int = Field(128, ge=1, description="L, Bernoulli latents")
        n_clusters: int = Field(30, ge=1, description="K, mixture components")
        interaction: Literal["full", "hierarchical"] = Field(
            "full", description="full: cluster-specific b_k, W_k in the likelihood; hierarchical: eta = theta_X + W y")
        mode: Literal["gradient", "analytical"] = Field(
            "gradient", description="gradient: rho learned; analytical: rho fitted by least squares every step")
        steps: int = Field(300_000, ge=1, description="total optimisation steps")
        steps_per_iteration: int = Field(1000, ge=1, description="steps in one Ray Tune training_iteration")
        optimizer: Literal["adam", "adamw", "sgd", "adadelta", "rmsprop"] = Field(
            "adam", description="adam (the runs; fused) | adamw | sgd | adadelta | rmsprop")
        lr: float = Field(1.5e-3, gt=0, description="learning rate after warmup")
        lr_warmup_steps: int = Field(
            500, ge=0, description="steps of the linear learning-rate ramp lr * min(1, (step + 1) / lr_warmup_steps)")
        lr_schedule: Literal["none", "cosine"] = Field(
            "none", description="none: constant after the warmup (the runs); cosine: CosineAnnealingLR over "
                                "steps. No plateau schedule: the beta-weighted training loss rises during "
                                "the beta ramp")
        kl_warmup_steps: int | None = Field(
            None, ge=0, description="steps of the beta ramp 0 -> 1 (set this or kl_warmup_fraction)")
        kl_warmup_fraction: float | None = Field(
            None, ge=0, le=1, description="beta ramp length as a fraction of steps; default 0.4 "
                                          "(run 37: 120K of 300K) when neither is set")
        conj_weight: float = Field(0.1, ge=0, description="w_conj, weight of Var_p[f] (times beta)")
        entropy_weight: float = Field(5.0, ge=0, description="w_ent, bonus on H[p(k)]")
        posterior_entropy_weight: float = Field(10.0, ge=0, description="w_post, bonus on H[mean_batch q(k|x)]")
        batch_size: int = Field(512, ge=1, description="images per step, drawn with replacement")
        mc_samples: int = Field(10, ge=1, description="S, posterior samples of E_q[psi_X(eta)]")
        prior_samples: int = Field(1024, ge=2, description="prior samples of the conjugation penalty")
        r2_samples: int = Field(10_000, ge=2, description="prior samples of the r2 metric")
        score_baseline: Literal["leave_one_out", "mean"] = Field(
            "leave_one_out", description="baseline of the score-function gradient: leave_one_out is "
                                         "unbiased; mean (the spec's wording) shrinks it by (S-1)/S")
        control_variate: Literal["none", "conjugation"] = Field(
            "none", description="none: the spec's score-function gradient; conjugation: rho.y (the "
                                "conjugation's linear fit of psi_X) as its control variate, lower "
                                "variance at the same expectation (beyond the spec)")
        pixel_levels: int = Field(16, ge=1, description="Binomial trials n; x = round(pixel * n / 255)")
        eval_every: int = Field(1, ge=1, description="evaluate every N iterations (and the first and last); "
                                                     "other iterations repeat the last metrics")
        eval_limit: int | None = Field(None, ge=1, description="evaluate on the first N test images only")
        eval_batch_size: int = Field(1000, ge=1, description="images per evaluation batch (memory only)")

        @model_validator(mode="after")
        def _one_kl_warmup(self) -> "VariationalMNISTFamily.Config":
            if self.kl_warmup_steps is not None and self.kl_warmup_fraction is not None:
                raise ValueError("set kl_warmup_steps or kl_warmup_fraction, not both")
            return self

        def kl_warmup(self) -> int:
            """Length of the β ramp in steps (``kl_warmup_steps``, or ``round(fraction·steps)``)."""
            if self.kl_warmup_steps is not None:
                return self.kl_warmup_steps
            fraction = 0.4 if self.kl_warmup_fraction is None else self.kl_warmup_fraction
            return int(round(fraction * self.steps))

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "nats", "mean training loss over the iteration's steps (beta-weighted objective)"),
        Metric("train_elbo", "max", "nats", "mean batch ELBO (beta = 1) over the iteration's steps"),
        *(m for q, mode, unit, desc in _EVAL_METRICS for m in per_split(q, mode, unit, desc)),
        Metric("r2", "max", "ratio", "clip(1 - Var[f]/Var[psi_X(eta)], -10, 1) over r2_samples prior samples"),
        Metric("rho_norm", None, "nats", "||rho||_2 (informational)"),
        Metric("current_beta", None, "weight", "KL / conjugation weight at the iteration's last step"),
        Metric("current_lr", None, "learning rate", "learning rate at the iteration's last step"),
        Metric("step", None, "count", "optimisation steps done"),
        Metric("eval_step", None, "count", "step at which the reported evaluation metrics were computed"),
        Metric("num_params", "min", "count", "trainable parameters"),
    )
    data_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    supports_amp: ClassVar[bool] = False
    renamed: ClassVar[dict[str, str]] = {**{q: f"test_{q}" for q, *_ in _EVAL_METRICS}, "beta": "current_beta"}
    contract_config: ClassVar[dict[str, Any]] = {
        "n_latent": 4, "n_clusters": 3, "steps": 4, "steps_per_iteration": 2, "lr_warmup_steps": 2,
        "kl_warmup_steps": 2, "batch_size": 16, "mc_samples": 2, "prior_samples": 32, "r2_samples": 64}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        n = cfg.pixel_levels
        self.x_train = torch.from_numpy(quantise(data.x_train, n))  # [N, D] uint8, one copy
        # log h(x) of every training image, once (a constant of the objective; nats, [N])
        self.log_h_train = torch.cat([binomial_log_base_measure(c, n) for c in self.x_train.split(8192)])
        self.model = ConjugatedMixture(
            self.x_train.shape[1], cfg.n_latent, cfg.n_clusters, interaction=cfg.interaction,
            mode=cfg.mode, n_trials=n, score_baseline=cfg.score_baseline,
            control_variate=cfg.control_variate)
        pixel_mean = self.x_train.float().mean(0) / n
        self.model.reset_parameters(pixel_mean, generator=self.generator)
        self.model.to(device)
        self.params = list(self.model.parameters())
        # fused Adam: one kernel for all parameters (several times faster than the default on CPU)
        self.optimizer = build_optimizer(self.params, cfg, fused=device.type in ("cpu", "cuda"))
        self.schedule = LRSchedule(self.optimizer, cfg, total_steps=cfg.steps)
        # sampling on an accelerator needs a generator of that device; on CPU the family's own
        # (checkpointed) generator drives everything
        self.rng = (self.generator if device.type == "cpu"
                    else torch.Generator(device=device).manual_seed(cfg.seed))
        self.step = 0
        self.eval_cache = EvalCache(cfg.eval_every, self.num_iterations, first=True)

    # -- ModelFamily -----------------------------------------------------------------------------
    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Reject data the Binomial pixel model cannot use.

        Raises:
            ValueError: for data of another task, non-image or non-``uint8`` data (the model
                needs 0..255 grey levels to quantise), an empty split, or missing labels
                (``-1``; NMI needs them).
        """
        super().check_data(data, config)
        if not data.is_image or data.x_train.dtype != np.uint8:
            raise ValueError(
                f"trainable 'variational_mnist' needs uint8 images [N, C, H, W] with values 0..255 "
                f"(it quantises them to Binomial counts); dataset {data.name!r} has "
                f"{data.x_train.dtype} samples of shape {data.sample_shape}")
        for split, x in (("train", data.x_train), ("test", data.x_test)):
            if len(x) == 0:
                raise ValueError(f"trainable 'variational_mnist': the {split} split of {data.name!r} is empty")
        if (data.y_test < 0).any():
            raise ValueError(f"trainable 'variational_mnist' reports NMI against class labels: dataset "
                             f"{data.name!r} has test images without a label (-1)")

    @classmethod
    def num_iterations_of(cls, config: FamilyConfig) -> int:
        """``ceil(steps / steps_per_iteration)``."""
        return math.ceil(config.steps / config.steps_per_iteration)

    def beta(self, step: int) -> float:
        """KL / conjugation weight ``β = min(1, step / kl_warmup)`` before 0-based step ``step``."""
        warm = self.config.kl_warmup()
        return 1.0 if warm <= 0 else min(1.0, step / warm)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """``steps_per_iteration`` Adam steps (fewer in the last iteration if ``steps`` ends there).

        Returns:
            ``train_loss``, ``train_elbo`` (means over the steps, nats), ``current_beta`` and
            ``current_lr`` of the last step, ``rho_norm`` and ``step`` (steps done).
        """
        cfg = self.config
        n_steps = min(cfg.steps_per_iteration, cfg.steps - self.step)
        self.model.train()
        total_loss = total_elbo = 0.0
        beta = lr = 0.0
        for _ in range(n_steps):
            beta, lr = self.beta(self.step), self.schedule.current_lr
            idx = torch.randint(len(self.x_train), (cfg.batch_size,), generator=self.generator)
            x = self.x_train[idx].to(self.device).float()
            log_h = self.log_h_train[idx].to(self.device)
            loss, stats = self.model.loss(
                x, beta=beta, entropy_weight=cfg.entropy_weight,
                posterior_entropy_weight=cfg.posterior_entropy_weight, conj_weight=cfg.conj_weight,
                n_samples=cfg.mc_samples, prior_samples=cfg.prior_samples, generator=self.rng, log_h=log_h)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(self.params, cfg.grad_clip)
            self.optimizer.step()
            self.schedule.after_step()
            self.step += 1
            total_loss += float(loss.detach())
            total_elbo += stats["elbo"]
        n = max(n_steps, 1)
        return {"train_loss": total_loss / n, "train_elbo": total_elbo / n, "current_beta": beta, "current_lr": lr,
                "rho_norm": float(self.model.rho.detach().norm()), "step": float(self.step)}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """``test_*`` metrics (``test_nmi``, ``test_cluster_accuracy``, ``test_active_clusters``,
        ``test_elbo``, ``test_kl``), ``val_*`` ones, ``r2`` and ``eval_step`` on iteration 0, every
        ``eval_every`` iterations and the last; the last computed values otherwise."""
        return self.eval_cache.get(iteration, self._evaluate_now)

    def _evaluate_now(self) -> dict[str, float]:
        """Every evaluation metric at the current step, the Monte-Carlo draws from
        :func:`~sweeplab.kit.evaluation.eval_generator` of ``(seed, step)``."""
        cfg = self.config
        gen = eval_generator(cfg.seed, self.step, self.device)
        x_test, y_test = self.data.x_test, self.data.y_test
        if cfg.eval_limit is not None:
            x_test, y_test = x_test[:cfg.eval_limit], y_test[:cfg.eval_limit]
        result = {f"test_{k}": v for k, v in self.evaluate_split(x_test, y_test, gen).items()}
        if self.data.x_val is not None and len(self.data.x_val):
            val = self.evaluate_split(self.data.x_val, self.data.y_val, gen)
            result.update({f"val_{k}": v for k, v in val.items()})
        with torch.no_grad():
            f, psi = self.model.conjugation_samples(cfg.r2_samples, gen)
        result["r2"] = cm.conjugation_r2(f, psi)
        result["eval_step"] = float(self.step)
        return result

    @torch.no_grad()
    def evaluate_split(self, images: np.ndarray, labels: np.ndarray,
                       generator: torch.Generator) -> dict[str, float]:
        """Clustering and ELBO metrics of one split.

        Args:
            images: ``uint8`` ``[N, C, H, W]``; labels: ``int64`` ``[N]``;
            generator: RNG of the Monte-Carlo draws (on the family's device).

        Returns:
            ``nmi``, ``cluster_accuracy``, ``active_clusters``, ``elbo`` and ``kl`` (nats),
            unprefixed (:meth:`evaluate` adds ``test_``/``val_``).
        """
        cfg = self.config
        self.model.eval()
        x_all = torch.from_numpy(quantise(images, cfg.pixel_levels))
        assign, elbo_sum, kl_sum = [], 0.0, 0.0
        for start in range(0, len(x_all), cfg.eval_batch_size):
            x = x_all[start:start + cfg.eval_batch_size].to(self.device).float()
            out = self.model.elbo(x, cfg.mc_samples, generator)
            assign.append(out["log_qk"].argmax(1).cpu())
            elbo_sum += float(out["elbo"].sum())
            kl_sum += float(out["kl"].sum())
        clusters = torch.cat(assign).numpy()
        n = len(x_all)
        return {"nmi": cm.nmi(labels, clusters), "cluster_accuracy": cm.cluster_accuracy(labels, clusters),
                "active_clusters": float(cm.active_clusters(clusters, cfg.n_clusters)),
                "elbo": elbo_sum / n, "kl": kl_sum / n}

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and schedule state, step counter, last metrics (and the device RNG
        off CPU)."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "step": self.step,
                 "last_eval": self.eval_cache.state_dict()}
        if self.rng is not self.generator:
            state["device_rng"] = self.rng.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned. A checkpoint written before the kit (no
        ``schedule``, metrics under their old names) loads too: its warmup is replayed up to the
        saved step and its metrics are renamed through :attr:`renamed`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        if "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])
        else:
            self._replay_schedule()
        last = state.get("last_eval", {})
        self.eval_cache.load_state_dict({self.renamed.get(k, k): v for k, v in last.items()})
        if "device_rng" in state and self.rng is not self.generator:
            self.rng.set_state(state["device_rng"].cpu())

    def _replay_schedule(self) -> None:
        """A fresh :class:`~sweeplab.kit.optim.LRSchedule` advanced to ``self.step`` (the warmup
        only: older checkpoints had no other schedule)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.effective_lr
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer.step()"
            self.schedule = LRSchedule(self.optimizer, self.config, total_steps=self.config.steps)
            for _ in range(min(self.step, self.config.lr_warmup_steps)):
                self.schedule.after_step()

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """``cluster_means``: for each cluster ``k`` (sorted by ``p(k)``, largest first) the mean
        image ``σ(θ_X + b_k + (W + W_k) E_p[y|k])``, as a ``[3, H, W]`` grid made by
        ``torchvision.utils.make_grid`` (an approximation of the cluster's mean pixel value)."""
        from torchvision.utils import make_grid

        m = self.model
        with torch.no_grad():
            order = torch.argsort(m.prior_log_pk(), descending=True)
            mean_y = torch.sigmoid(m.prior_logits())[order]
            probs = torch.sigmoid(m.eta(mean_y, order)).cpu()
        c, h, w = self.data.sample_shape
        return {"cluster_means": make_grid(probs.view(-1, c, h, w), nrow=10, padding=2)}

    def extra_results(self) -> dict[str, float]:
        """``num_params``: trainable parameters."""
        return {"num_params": float(count_params(self.model))}
