"""``mlp_regression``: an MLP regressor trained full-batch or mini-batch with any optimizer of the
kit, LBFGS included (the ANN course report's §1.3 and §1.4; ``../shared/specs/ann_course.md`` §1).

Data: any ``regression`` bundle. Two are made for it: ``noisy_1d`` (y = f(x) + sigma eps, the
course's small noisy problem; :mod:`sweeplab.datasets.regression_synthetic`) and
``kul_regression`` (the personal regression problem; :mod:`sweeplab.datasets.kul_regression`).
Inputs and targets are standardised with the training split's mean and standard deviation
(``standardize``); **every MSE is reported on the raw target scale**, on every split, so
validation and test MSE compare directly (the report's differ 113x, probably by scale). On
``noisy_1d``, ``noise_std`` redraws every split's noise at that sigma from the trial's seed, so
sigma can be searched and each repeat is a fresh noise draw as well as a fresh initialisation.

One iteration is ``epochs_per_iteration`` epochs (default 50: a 2,500-epoch run reports 50 times;
one report per epoch would spend more time in Ray than in training). An epoch is one optimizer
step on the whole training split (``batch_size: null``, the course's full-batch setting) or one
pass in shuffled mini-batches; an LBFGS step does up to ``lbfgs_max_iter`` iterations with a
strong-Wolfe line search. The validation MSE is measured after every epoch, so ``best_epoch`` is
exact to the epoch whatever the reporting cadence.

``warm_start`` trains the same weights with a list of earlier optimizer stages before the trial's
own optimizer starts (in iteration 0; their epochs are not counted): this reproduces what the
report probably did when it ran optimizers one after another on one net, against the default,
a fresh initialisation for every optimizer.

Reported after every iteration: ``train_loss`` (the objective, rescaled to raw target units),
``train_mse``, ``val_mse``, ``test_mse``; ``val_true_mse`` and ``test_true_mse`` (against the
noiseless f of ``noisy_1d``, NaN on other data); ``best_epoch``, ``grad_evals`` and
``grad_evals_to_best``; constants ``num_params``, ``signal_power`` (mean f^2) and ``snr_db``.
Seconds to the best epoch come from the loop's ``train_seconds``: :func:`seconds_to_best`.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import ConfigDict, Field, model_validator

from sweeplab.datasets.base import DataBundle
from sweeplab.datasets.regression_synthetic import noiseless_targets
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.optim import OptimizerConfig, build_optimizer, clip_gradients, count_params
from sweeplab.kit.tensors import batches
from sweeplab.metrics.convention import Metric, per_split
from sweeplab.models.mlp import MLP

Activation = Literal["relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu", "identity"]


class WarmStage(OptimizerConfig):
    """One optimizer stage run before the trial's own training (see ``warm_start``)."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(..., ge=1, description="epochs of this stage")


class MLPRegressionConfig(OptimizerConfig, FamilyConfig):
    """Hyperparameters of ``mlp_regression`` (optimizer fields from
    :class:`~sweeplab.kit.optim.OptimizerConfig`; note its SGD ``momentum`` default 0.9: plain
    SGD needs ``momentum: 0``)."""

    hidden: int = Field(50, ge=1, le=4096, description="units of every hidden layer")
    layers: int = Field(1, ge=0, le=16, description="hidden layers (0 = linear regression)")
    activation: Activation = Field("tanh", description="hidden activation")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after every hidden activation")
    epochs: int = Field(2500, ge=1, description="training epochs (the spec's proposal for §1.3: 2,500)")
    epochs_per_iteration: int = Field(50, ge=1, description="epochs per reported iteration")
    batch_size: int | None = Field(None, ge=1, description="samples per step; null = full batch")
    lbfgs_max_iter: int = Field(20, ge=1, description="LBFGS iterations per step (the report's: 1)")
    standardize: bool = Field(True, description="standardise inputs and targets with training statistics "
                                                "(MSEs are reported on the raw scale either way)")
    noise_std: float | None = Field(None, ge=0.0, description="noisy_1d only: redraw every split's noise "
                                    "with this sigma from the trial's seed (null = the data's own draws)")
    warm_start: list[WarmStage] = Field(default_factory=list, description="optimizer stages run on the same "
                                        "weights before this trial's optimizer (empty = fresh weights)")

    @model_validator(mode="after")
    def _full_batch_lbfgs(self) -> "MLPRegressionConfig":
        if self.batch_size is not None and "lbfgs" in {self.optimizer, *(s.optimizer for s in self.warm_start)}:
            raise ValueError("optimizer lbfgs needs full batches: set batch_size: null")
        return self


def seconds_to_best(history: pd.DataFrame) -> pd.Series:
    """Training seconds until each trial's best epoch, from the loop's ``train_seconds``.

    Inside an iteration the seconds are interpolated linearly in gradient evaluations (each
    costs the same: one forward and backward pass over a batch of fixed size).

    Args:
        history: ``Sweep.history()`` of an ``mlp_regression`` sweep (``trial_id``,
            ``training_iteration``, ``train_seconds``, ``grad_evals``, ``grad_evals_to_best``).

    Returns:
        Seconds per ``trial_id`` (NaN for a trial without a finite best).
    """
    out = {}
    for trial, h in history.sort_values("training_iteration").groupby("trial_id"):
        evals = np.concatenate([[0.0], pd.to_numeric(h["grad_evals"], errors="coerce").to_numpy(float)])
        secs = np.concatenate([[0.0], pd.to_numeric(h["train_seconds"], errors="coerce").to_numpy(float)])
        best = float(pd.to_numeric(h["grad_evals_to_best"], errors="coerce").iloc[-1])
        ok = np.isfinite(evals) & np.isfinite(secs)
        out[trial] = float(np.interp(best, evals[ok], secs[ok])) if math.isfinite(best) and ok.sum() > 1 else math.nan
    return pd.Series(out, name="seconds_to_best", dtype=float)


def _as_2d(y: np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=np.float32).reshape(len(y), -1)


def _std(a: np.ndarray) -> np.ndarray:
    return np.maximum(a.std(0), 1e-8).astype(np.float32)


@register_family
class MLPRegression(ModelFamily):
    """Sweepable MLP regressor (see the module docstring for what it reports)."""

    name: ClassVar[str] = "mlp_regression"
    Config: ClassVar[type[FamilyConfig]] = MLPRegressionConfig
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "squared target units", "mean training objective (MSE) over the iteration's "
               "epochs, measured during training, rescaled to raw target units"),
        *per_split("mse", "min", "squared target units", "mean squared error on the raw target scale, eval mode",
                   splits=("train", "val", "test")),
        *per_split("true_mse", "min", "squared target units", "MSE against the noiseless target f(x) "
                   "(noisy_1d; NaN on data without one)"),
        Metric("best_epoch", None, "count", "1-based epoch with the lowest val_mse so far (train_mse without a "
               "validation split)"),
        Metric("grad_evals", None, "count", "loss-and-gradient evaluations so far (LBFGS line searches included)"),
        Metric("grad_evals_to_best", "min", "count", "gradient evaluations up to the end of best_epoch"),
        Metric("signal_power", None, "squared target units", "mean f(x)^2 over the training inputs (noisy_1d; "
               "NaN otherwise): SNRs compare with the report's only when it is about 0.1"),
        Metric("snr_db", None, "ratio", "10 log10(signal_power / sigma^2) in decibels, the report's table 1 SNR"),
        Metric("num_params", "min", "count", "trainable model parameters"),
    )
    data_tasks: ClassVar[tuple[str, ...]] = ("regression",)
    contract_config: ClassVar[dict[str, Any]] = {"epochs": 4, "epochs_per_iteration": 2, "hidden": 8}

    def __init__(self, config: MLPRegressionConfig, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        self.synthetic = "target_fn" in data.meta
        raw = self._targets(data)
        x_train, y_train = raw["train"]

        def scale(a: np.ndarray, stat, fill: float) -> np.ndarray:
            return stat(a) if cfg.standardize else np.full(a.shape[1], fill, np.float32)

        self.x_mean, self.x_std = scale(x_train, lambda a: a.mean(0), 0.0), scale(x_train, _std, 1.0)
        self.y_mean, self.y_std = scale(y_train, lambda a: a.mean(0), 0.0), scale(y_train, _std, 1.0)
        self._x = {s: torch.as_tensor((x - self.x_mean) / self.x_std, device=device) for s, (x, _) in raw.items()}
        self._y = {s: torch.as_tensor((y - self.y_mean) / self.y_std, device=device) for s, (_, y) in raw.items()}
        self._f = {s: torch.as_tensor(noiseless_targets(data.meta, x)[:, None], dtype=torch.float32, device=device)
                   for s, (x, _) in raw.items()} if self.synthetic else {}
        self.y_var = torch.as_tensor(self.y_std ** 2, device=device)
        self._y_scale = (torch.as_tensor(self.y_mean, device=device), torch.as_tensor(self.y_std, device=device))
        self.model = MLP(x_train.shape[1], y_train.shape[1], hidden=cfg.hidden, layers=cfg.layers,
                         activation=cfg.activation, dropout=cfg.dropout).to(device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg, lbfgs_max_iter=cfg.lbfgs_max_iter)
        self.epochs_done, self.grad_evals = 0, 0
        self.best = {"monitored": math.inf, "epoch": 0, "grad_evals": 0}
        sigma = cfg.noise_std if cfg.noise_std is not None else data.meta.get("noise_std", math.nan)
        power = float(data.meta["mean_f2"]) if self.synthetic else math.nan
        self._constants = {"num_params": count_params(self.model), "signal_power": power,
                           "snr_db": 10 * math.log10(power / sigma ** 2) if self.synthetic and sigma > 0 else math.nan}

    def _targets(self, data: DataBundle) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``split -> (x [N, D], y [N, K])`` float32 on the raw scale; with ``noise_std`` the
        targets are f(x) + noise_std * eps, eps drawn from the trial's seed (train, val, test in
        that order: every sigma at one seed shares the draws, every seed draws afresh)."""
        splits = {"train": (data.x_train, data.y_train), "val": (data.x_val, data.y_val),
                  "test": (data.x_test, data.y_test)}
        noise = np.random.default_rng([self.config.seed, 7919])
        out = {}
        for split, (x, y) in splits.items():
            if x is None:
                continue
            x2, y2 = np.asarray(x, np.float32).reshape(len(x), -1), _as_2d(y)
            if self.config.noise_std is not None:
                f = noiseless_targets(data.meta, x2)[:, None]
                y2 = (f + self.config.noise_std * noise.standard_normal(f.shape)).astype(np.float32)
            out[split] = (x2, y2)
        return out

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Require ``regression`` data; ``noise_std`` only on ``noisy_1d`` data.

        Raises:
            ValueError: naming what does not fit.
        """
        super().check_data(data, config)
        if getattr(config, "noise_std", None) is not None:
            if "target_fn" not in data.meta:
                raise ValueError(f"mlp_regression: noise_std redraws the noise of noisy_1d data; dataset "
                                 f"{data.name!r} has no known noiseless target: remove noise_std")

    @classmethod
    def num_iterations_of(cls, config: FamilyConfig) -> int:
        """``ceil(epochs / epochs_per_iteration)``."""
        return math.ceil(config.epochs / config.epochs_per_iteration)

    def extra_results(self) -> dict[str, float]:
        """``num_params``, ``signal_power`` and ``snr_db``."""
        return dict(self._constants)

    def _epoch(self, optimizer: torch.optim.Optimizer, batch_size: int | None, counted: bool) -> float:
        """One epoch; returns the mean pre-step loss on the raw target scale."""
        self.model.train()
        x, y = self._x["train"], self._y["train"]
        n = len(x)
        total = 0.0
        for idx in ([None] if batch_size is None else batches(n, batch_size, shuffle=True, generator=self.generator)):
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            first: list[float] = []

            def closure() -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                err = self.model(xb) - yb
                loss = err.square().mean()
                loss.backward()
                clip_gradients(self.model.parameters(), self.config.grad_clip)
                if not first:
                    first.append(float((err.detach().square() * self.y_var).mean()))
                if counted:
                    self.grad_evals += 1
                return loss

            if isinstance(optimizer, torch.optim.LBFGS):
                optimizer.step(closure)
            else:
                closure()
                optimizer.step()
            total += first[0] * len(xb)
        return total / n

    @torch.no_grad()
    def _mse(self, split: str, against: str = "y") -> float:
        """MSE of the current model on ``split`` in raw target units, against the noisy targets
        (``y``) or the noiseless f (``f``)."""
        self.model.eval()
        pred = self.model(self._x[split])
        if against == "f":
            raw = pred * self._y_scale[1] + self._y_scale[0]
            return float((raw - self._f[split]).square().mean())
        return float(((pred - self._y[split]).square() * self.y_var).mean())

    def _warm_up(self) -> None:
        """Run the ``warm_start`` stages on the model (not counted as the trial's epochs)."""
        for stage in self.config.warm_start:
            opt = build_optimizer(self.model.parameters(), stage, lbfgs_max_iter=self.config.lbfgs_max_iter)
            for _ in range(stage.epochs):
                self._epoch(opt, self.config.batch_size, counted=False)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """``epochs_per_iteration`` epochs (fewer in a last, partial iteration), each followed
        by the validation MSE that tracks ``best_epoch``; the warm-start stages first in
        iteration 0.

        Returns:
            ``train_loss``: mean pre-step training MSE of the epochs, raw target units.
        """
        cfg = self.config
        if iteration == 0 and self.epochs_done == 0:
            self._warm_up()
        todo = min(cfg.epochs_per_iteration, cfg.epochs - self.epochs_done)
        losses = []
        monitor = "val" if "val" in self._x else "train"
        for _ in range(todo):
            losses.append(self._epoch(self.optimizer, cfg.batch_size, counted=True))
            self.epochs_done += 1
            monitored = self._mse(monitor)
            if monitored < self.best["monitored"]:
                self.best = {"monitored": monitored, "epoch": self.epochs_done, "grad_evals": self.grad_evals}
        return {"train_loss": float(np.mean(losses)) if losses else math.nan}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """MSEs of the current model on every split (raw target units), the noiseless-target
        MSEs, and the best epoch so far."""
        out = {f"{s}_mse": self._mse(s) if s in self._x else math.nan for s in ("train", "val", "test")}
        for s in ("val", "test"):
            out[f"{s}_true_mse"] = self._mse(s, "f") if self.synthetic and s in self._x else math.nan
        out.update(best_epoch=self.best["epoch"], grad_evals=self.grad_evals,
                   grad_evals_to_best=self.best["grad_evals"])
        return out

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, epoch and evaluation counters and the best epoch so far."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epochs_done": self.epochs_done, "grad_evals": self.grad_evals, "best": dict(self.best)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_done, self.grad_evals = int(state["epochs_done"]), int(state["grad_evals"])
        self.best = {"monitored": float(state["best"]["monitored"]), "epoch": int(state["best"]["epoch"]),
                     "grad_evals": int(state["best"]["grad_evals"])}
