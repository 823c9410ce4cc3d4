"""``rbm``: a Bernoulli restricted Boltzmann machine on images, trained by CD-k or persistent CD.

Source: ``../shared/specs/ann_course.md`` §7 (the course report's §4.1.1); model, update and
pseudo-likelihood in :mod:`sweeplab.models.rbm`, which follows scikit-learn's ``BernoulliRBM``
(the report's script) exactly. Defaults are sklearn's: 256 hidden units, learning rate 0.1, batch 10,
10 epochs (``n_iter``), persistent CD with one Gibbs step, batches in data order (no shuffling),
weights ``N(0, 0.01^2)``. Pixels are scaled to [0, 1] (``binarize: true`` thresholds them at 0.5).

One iteration is one epoch over the training split. Reported:

* ``train_recon_mse``: epoch mean of each training batch's one-step reconstruction error before
  its update (per pixel; the loop checks it for NaN);
* ``{val,test}_pseudo_likelihood``: mean of sklearn's ``score_samples`` (nats per image): the flipped
  pixel of sample ``i`` is ``numpy.random.RandomState(seed).randint(0, D, n)[i]``, exactly what
  ``BernoulliRBM(random_state=seed).score_samples`` flips, so the numbers can be reproduced with
  sklearn on the same weights;
* ``{val,test}_recon_mse``: per-pixel squared error of the deterministic v -> p(h|v) -> p(v|h) pass;
* ``{val,test}_active_units``: hidden units whose ``p(h_j = 1 | v)`` has a variance above 0.01 over
  the split (the threshold of Burda et al. 2016's active units); with few units and a small learning
  rate every unit can end always on, copies of one mean-image filter, and the model reconstructs
  every image as the mean image;
* ``{val,test}_inpaint_mse``: per-pixel squared error on ``inpaint_rows`` whole rows removed at
  ``inpaint_position`` (top | middle | bottom) of the first ``inpaint_samples`` images, refilled by
  ``inpaint_steps`` Gibbs sweeps with the observed pixels clamped (random numbers from
  :func:`~sweeplab.kit.evaluation.eval_generator`, so a resumed trial evaluates identically);
* ``num_params``.

TensorBoard (``logging.media_every``): ``filters`` (the first 100 hidden units' weights, each
scaled to [0, 1]), ``gibbs_samples`` (16 chains from random binary images; one row per
``sample_steps`` count: 50, 100, 200 by default) and ``inpainting`` (originals, with the rows
removed, filled in).
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.evaluation import EvalCache, EvalConfig, eval_generator
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.tensors import batches, shared_tensor
from sweeplab.metrics.convention import Metric, per_split
from sweeplab.models.rbm import BernoulliRBM, inpaint, row_mask, torch_uniform


@register_family
class RBMFamily(ModelFamily):
    """Bernoulli RBM on images; see the module docstring."""

    name: ClassVar[str] = "rbm"

    class Config(EvalConfig, FamilyConfig):
        """Hyperparameters of ``rbm``; defaults are scikit-learn ``BernoulliRBM``'s."""

        n_components: int = Field(256, ge=1, description="hidden units H")
        learning_rate: float = Field(0.1, gt=0.0, description="step size of the batch-mean CD gradient")
        batch_size: int = Field(10, ge=1, description="images per update (and PCD chains)")
        epochs: int = Field(10, ge=1, description="iterations, one epoch each (sklearn's n_iter)")
        method: Literal["pcd", "cd"] = Field("pcd", description="persistent CD (sklearn) | CD-k from the data")
        gibbs_steps: int = Field(1, ge=1, description="k, Gibbs steps of the negative chain per update")
        shuffle: bool = Field(False, description="shuffle batches every epoch (sklearn: data order)")
        binarize: bool = Field(False, description="threshold pixels at 0.5 instead of intensities in [0, 1]")
        inpaint_rows: int = Field(6, ge=1, description="whole image rows removed for inpainting")
        inpaint_position: Literal["top", "middle", "bottom"] = Field("middle", description="where the rows go")
        inpaint_steps: int = Field(50, ge=1, description="Gibbs sweeps that refill them (report: 49)")
        inpaint_samples: int = Field(1000, ge=1, description="images of each split inpainted")
        sample_steps: list[Annotated[int, Field(ge=1)]] = Field([50, 100, 200], min_length=1,
                                        description="Gibbs sweeps after which TensorBoard shows the samples")

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_recon_mse", "min", "squared target units",
               "epoch mean of the batches' one-step reconstruction error before their updates (per pixel)"),
        *per_split("pseudo_likelihood", "max", "nats", "mean sklearn score_samples: D log sigmoid(F(v~) - F(v)), "
                   "one pixel flipped per image"),
        *per_split("recon_mse", "min", "squared target units", "per-pixel error of v -> p(h|v) -> p(v|h)"),
        *per_split("inpaint_mse", "min", "squared target units", "per-pixel error on the removed rows after "
                   "clamped Gibbs refilling"),
        *per_split("active_units", "max", "count", "hidden units whose p(h_j = 1 | v) varies over the split "
                   "(variance > 0.01); an always-on or dead unit only adds a bias"),
        Metric("num_params", None, "count", "weights and biases: H*D + H + D"),
    )
    loss_metric: ClassVar[str] = "train_recon_mse"
    data_tasks: ClassVar[tuple[str, ...]] = ("classification", "unlabelled")
    contract_config: ClassVar[dict[str, Any]] = {
        "epochs": 2, "n_components": 4, "batch_size": 8, "learning_rate": 0.05, "inpaint_rows": 2,
        "inpaint_steps": 2, "inpaint_samples": 5, "sample_steps": [1, 2], "method": "cd", "gibbs_steps": 2}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        self.height, self.width = data.sample_shape[-2:]
        self.n_visible = self.height * self.width
        self.rbm = BernoulliRBM(self.n_visible, cfg.n_components, self.generator).to(device)
        self.chain = torch.zeros(cfg.batch_size, cfg.n_components, dtype=torch.float64, device=device)
        self.missing = row_mask(self.height, self.width, cfg.inpaint_rows, cfg.inpaint_position).to(device)
        self.eval_cache = EvalCache(cfg.eval_every, cfg.epochs)

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Raise ``ValueError`` for data of another task, non-image or multi-channel data, float
        pixels outside [0, 1], or more rows to remove than the images have."""
        super().check_data(data, config)
        if not data.is_image or data.sample_shape[0] != 1:
            raise ValueError(f"rbm needs one-channel images [N, 1, H, W]; dataset {data.name!r} has samples of "
                             f"shape {data.sample_shape}")
        x = data.x_train
        if x.dtype != np.uint8 and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ValueError(f"rbm has Bernoulli visible units: float pixels of {data.name!r} must lie in [0, 1]")
        rows = getattr(config, "inpaint_rows", 1)
        if rows > data.sample_shape[1]:
            raise ValueError(f"rbm inpaint_rows={rows} is more than the {data.sample_shape[1]} rows of "
                             f"{data.name!r}'s images")

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch of CD/PCD updates; returns ``train_recon_mse``."""
        cfg = self.config
        x_all = shared_tensor(self.data.x_train)
        uniform = torch_uniform(self.generator, self.device)
        total, count = 0.0, 0
        for idx in batches(len(x_all), cfg.batch_size, shuffle=cfg.shuffle, generator=self.generator):
            v = self._pixels(x_all[idx])
            total += float(((self.rbm.reconstruct(v) - v) ** 2).mean(-1).sum())
            count += len(idx)
            chain = self.chain if cfg.method == "pcd" else None
            new = self.rbm.cd_step(v, cfg.learning_rate, uniform, cfg.gibbs_steps, chain)
            if cfg.method == "pcd":
                self.chain = new
        return {"train_recon_mse": total / max(count, 1)}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """``test_*`` (and ``val_*``) metrics every ``eval_every`` epochs and after the last."""
        return self.eval_cache.get(iteration, lambda: self._evaluate_splits(iteration))

    def state_dict(self) -> dict[str, Any]:
        """Weights, the persistent chain and the last metrics."""
        return {"rbm": self.rbm.state_dict(), "chain": self.chain.cpu(), "last_eval": self.eval_cache.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.rbm.load_state_dict(state["rbm"])
        self.chain = state["chain"].to(self.device)
        self.eval_cache.load_state_dict(state["last_eval"])

    def extra_results(self) -> dict[str, float]:
        """``num_params``."""
        return {"num_params": float(sum(p.numel() for p in self.rbm.parameters()))}

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """``filters``, ``gibbs_samples`` and ``inpainting`` grids (module docstring)."""
        from torchvision.utils import make_grid

        cfg, shape = self.config, (1, self.height, self.width)
        w = self.rbm.weight[:100].cpu()
        lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
        filters = ((w - lo) / (hi - lo).clamp_min(1e-12)).reshape(-1, *shape)
        gen = eval_generator(cfg.seed, 10**6)
        uniform = torch_uniform(gen, self.device)
        start = (uniform((16, self.n_visible)) < 0.5).double()
        steps = tuple(sorted(set(cfg.sample_steps)))
        _, shots = self.rbm.gibbs(start, steps[-1], uniform, snapshots=steps)
        samples = torch.cat([shots[s] for s in steps]).cpu().reshape(-1, *shape)
        v = self._pixels(shared_tensor(self.data.x_test[:8]))
        filled = inpaint(self.rbm, v, self.missing, cfg.inpaint_steps, uniform)
        holed = torch.where(self.missing, torch.full_like(v, 0.5), v)
        rows = torch.cat([v, holed, filled]).cpu().reshape(-1, *shape)
        return {"filters": make_grid(filters.float(), nrow=10, padding=1),
                "gibbs_samples": make_grid(samples.float(), nrow=16, padding=1),
                "inpainting": make_grid(rows.float(), nrow=len(v), padding=1)}

    # -- internals ------------------------------------------------------------------------------
    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` images -> ``[B, D]`` float64 in [0, 1] (thresholded with ``binarize``)."""
        v = x.reshape(len(x), -1).to(self.device, torch.float64)
        v = v / 255.0 if x.dtype == torch.uint8 else v
        return (v > 0.5).double() if self.config.binarize else v

    def _evaluate_splits(self, iteration: int) -> dict[str, float]:
        result = {f"test_{k}": v for k, v in self._evaluate_split(self.data.x_test, iteration).items()}
        if self.data.x_val is not None and len(self.data.x_val):
            result.update({f"val_{k}": v for k, v in self._evaluate_split(self.data.x_val, iteration).items()})
        return result

    @torch.no_grad()
    def _evaluate_split(self, x_np: np.ndarray, iteration: int) -> dict[str, float]:
        """Pseudo-likelihood, reconstruction and inpainting errors on one split (module docstring)."""
        cfg = self.config
        x_all = shared_tensor(x_np)
        n = len(x_all)
        flips = torch.from_numpy(np.random.RandomState(cfg.seed).randint(0, self.n_visible, n)).to(self.device)
        pl = recon = 0.0
        h_sum = h_sq = torch.zeros(cfg.n_components, dtype=torch.float64, device=self.device)
        for idx in batches(n, 1000, shuffle=False):
            v = self._pixels(x_all[idx])
            pl += float(self.rbm.pseudo_likelihood(v, flips[idx.to(self.device)]).sum())
            hp = self.rbm.hidden_probs(v)
            recon += float(((self.rbm.visible_probs(hp) - v) ** 2).mean(-1).sum())
            h_sum, h_sq = h_sum + hp.sum(0), h_sq + (hp * hp).sum(0)
        variance = h_sq / n - (h_sum / n) ** 2
        v = self._pixels(x_all[:cfg.inpaint_samples])
        uniform = torch_uniform(eval_generator(cfg.seed, iteration), self.device)
        filled = inpaint(self.rbm, v, self.missing, cfg.inpaint_steps, uniform)
        err = float(((filled - v)[:, self.missing] ** 2).mean())
        return {"pseudo_likelihood": pl / n, "recon_mse": recon / n, "inpaint_mse": err,
                "active_units": float((variance > 0.01).sum())}
