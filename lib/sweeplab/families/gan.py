"""``gan``: the course report's GAN on MNIST-like images (fully connected or DCGAN backbone),
measured by the quality of its samples rather than by its losses.

Source: ``../shared/specs/ann_course.md`` §8 (the report is ``../shared/seeds/ann_course_report.md``
§4.2); model and losses in :mod:`sweeplab.models.gan`; sample metrics from the fixed reference
classifier of :mod:`sweeplab.metrics.reference_classifier` (trained once per dataset, cached).

One iteration is one epoch over the training images (pixels scaled to [-1, 1]) in shuffled batches
of ``batch_size`` (a last batch of fewer than 2 images is skipped). Every batch is one
discriminator step on real images and as many fresh fakes; every ``d_steps``-th discriminator step
is followed by one generator step on ``batch_size`` fresh codes, with the non-saturating loss.
Both use Adam with their own learning rates.

Reported after every epoch: ``train_loss_d`` (``1/2 (BCE real + BCE fake)``, nats, ``ln 2`` when D
cannot tell), ``train_loss_g`` (``-log D(G(z))``, nats), ``train_d_real`` and ``train_d_fake``
(the epoch's mean ``D(x)`` and ``D(G(z))`` at the discriminator steps, training mode); every
``eval_every`` epochs, ``n_samples`` generated images (codes from the evaluation seed, generator in
eval mode) scored by the reference classifier: ``class_coverage``, ``class_kl``,
``fd_classifier``; constant: their ceilings on as many real test images, ``reference_accuracy``,
``num_params`` (generator + discriminator). TensorBoard (``logging.media_every``): a grid of 64
samples from fixed codes.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.evaluation import EvalCache, EvalConfig, eval_generator
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.optim import count_params
from sweeplab.kit.tensors import batches, shared_tensor, to_float_images
from sweeplab.metrics.convention import Metric
from sweeplab.metrics.reference_classifier import image_sample_metrics, reference_classifier
from sweeplab.models.gan import build_gan, discriminator_loss, generator_loss


@register_family
class GANFamily(ModelFamily):
    """GAN with an MLP or DCGAN backbone (see the module docstring)."""

    name: ClassVar[str] = "gan"

    class Config(EvalConfig, FamilyConfig):
        """Hyperparameters; defaults are the report's (latent 20, batch 512, lr 1e-3, 70 epochs)."""

        backbone: Literal["mlp", "dcgan"] = Field("mlp", description="mlp = the report's; dcgan = Radford et al.")
        latent_dim: int = Field(20, ge=1, description="size of the code z ~ N(0, I)")
        lr_g: float = Field(1e-3, gt=0, description="generator Adam learning rate")
        lr_d: float = Field(1e-3, gt=0, description="discriminator Adam learning rate")
        beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1 of both (PyTorch's 0.9; DCGAN used 0.5)")
        d_steps: int = Field(1, ge=1, description="discriminator steps per generator step")
        batch_size: int = Field(512, ge=2, description="real (and fake) images per step")
        epochs: int = Field(70, ge=1, description="epochs (= iterations)")
        n_samples: int = Field(10000, ge=2, description="generated images scored per evaluation")
        reference_dir: str | None = Field(None, description="cache folder of the reference classifier "
                                                            "(default $SWEEPLAB_CACHE_DIR or ~/.cache/sweeplab)")

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss_d", "min", "nats", "epoch mean of 1/2 (BCE(D(x), 1) + BCE(D(G(z)), 0)); ln 2 = undecided"),
        Metric("train_loss_g", "min", "nats", "epoch mean of the non-saturating -log D(G(z))"),
        Metric("train_d_real", None, "fraction", "epoch mean of D(x) on real images (training mode)"),
        Metric("train_d_fake", None, "fraction", "epoch mean of D(G(z)) at the discriminator steps"),
        *image_sample_metrics(),
        Metric("num_params", "min", "count", "trainable parameters of generator + discriminator"),
    )
    loss_metric: ClassVar[str] = "train_loss_d"
    data_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    contract_config: ClassVar[dict[str, Any]] = {"epochs": 2, "batch_size": 16, "latent_dim": 4,
                                                 "backbone": "dcgan", "n_samples": 32}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        self.G, self.D = (m.to(device) for m in build_gan(cfg.backbone, data.sample_shape, cfg.latent_dim))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
        self.x_train = shared_tensor(data.x_train)
        self.reference = reference_classifier(data, cfg.reference_dir)
        self.ceilings = {f"{k}_ceiling": v for k, v in self.reference.ceilings(cfg.n_samples).items()}
        self.eval_cache = EvalCache(cfg.eval_every, cfg.epochs)
        self.d_step_count = 0

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Labelled images ``[N, C, H, W]`` (the reference classifier needs the labels), >= 2 classes.

        Raises:
            ValueError: another task, vectors, missing labels, dcgan with sides not divisible by 4.
        """
        super().check_data(data, config)
        if not data.is_image:
            raise ValueError(f"gan generates images [N, C, H, W]; dataset {data.name!r} has samples of shape "
                             f"{data.sample_shape} (use mnist or fashion_mnist)")
        if data.num_classes < 2 or (data.y_train < 0).any() or (data.y_test < 0).any():
            raise ValueError(f"gan scores its samples with a reference classifier trained on the labels: "
                             f"dataset {data.name!r} needs labels 0..C-1 with C >= 2")
        _, h, w = data.sample_shape
        if getattr(config, "backbone", "mlp") == "dcgan" and (h % 4 or w % 4):
            raise ValueError(f"gan backbone dcgan needs image sides divisible by 4; {data.name!r} is {h}x{w}")

    def _images(self, idx: torch.Tensor) -> torch.Tensor:
        return to_float_images(self.x_train[idx], self.device) * 2.0 - 1.0

    def _codes(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, generator=gen).to(self.device)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch of alternating updates (see the module docstring)."""
        cfg = self.config
        self.G.train()
        self.D.train()
        sums = {"train_loss_d": 0.0, "train_loss_g": 0.0, "train_d_real": 0.0, "train_d_fake": 0.0}
        n_d = n_g = 0
        for idx in batches(len(self.x_train), cfg.batch_size, shuffle=True, generator=self.generator):
            if len(idx) < 2:
                continue
            real = self._images(idx)
            with torch.no_grad():
                fake = self.G(self._codes(len(idx), self.generator))
            real_logits, fake_logits = self.D(real), self.D(fake)
            loss_d = discriminator_loss(real_logits, fake_logits)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            sums["train_loss_d"] += float(loss_d.detach())
            sums["train_d_real"] += float(torch.sigmoid(real_logits.detach()).mean())
            sums["train_d_fake"] += float(torch.sigmoid(fake_logits.detach()).mean())
            n_d += 1
            self.d_step_count += 1
            if self.d_step_count % cfg.d_steps == 0:
                loss_g = generator_loss(self.D(self.G(self._codes(cfg.batch_size, self.generator))))
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                self.opt_g.step()
                sums["train_loss_g"] += float(loss_g.detach())
                n_g += 1
        out = {k: v / max(n_d, 1) for k, v in sums.items()}
        out["train_loss_g"] = sums["train_loss_g"] / n_g if n_g else float("nan")
        return out

    @torch.no_grad()
    def generate(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1] (generator in eval mode), on the CPU."""
        self.G.eval()
        out = [self.G(self._codes(min(1000, n - s), gen)).cpu() for s in range(0, n, 1000)]
        return (torch.cat(out) + 1.0) / 2.0

    def evaluate(self, iteration: int) -> dict[str, float]:
        """The reference classifier's scores of ``n_samples`` fresh samples (codes from the
        evaluation seed of ``iteration``), every ``eval_every`` epochs."""
        return self.eval_cache.get(iteration, lambda: self.reference.score(
            self.generate(self.config.n_samples, eval_generator(self.config.seed, iteration))))

    def state_dict(self) -> dict[str, Any]:
        """Both networks, both optimizers, the step count and the last metrics."""
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "d_step_count": self.d_step_count,
                "last_eval": self.eval_cache.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.d_step_count = int(state["d_step_count"])
        self.eval_cache.load_state_dict(state["last_eval"])

    def extra_results(self) -> dict[str, float]:
        """Ceilings, ``reference_accuracy`` and ``num_params``."""
        return {**self.ceilings, "reference_accuracy": self.reference.test_accuracy,
                "num_params": float(count_params(self.G) + count_params(self.D))}

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """``fixed_noise_samples``: an 8x8 grid of samples from 64 codes fixed by the seed, so the
        grids of successive epochs show the same codes."""
        from torchvision.utils import make_grid

        gen = torch.Generator().manual_seed(self.config.seed)
        images = self.generate(64, gen)
        grid = make_grid(images, nrow=8, padding=2)
        return {"fixed_noise_samples": grid if grid.shape[0] == 3 else grid.repeat(3, 1, 1)}
