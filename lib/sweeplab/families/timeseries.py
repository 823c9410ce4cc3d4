"""``timeseries``: one-step forecasters (MLP or LSTM) of a scalar series from its last ``lag``
values, chosen by time-ordered cross-validation and tested by a recursive multi-step forecast:
the ANN course report's Santa Fe laser study (§2.2; ``../shared/specs/ann_course.md`` §2).

Protocol (the spec's proposals where the report is silent):

* **Scaling.** The series is standardised with the training history's mean and population
  standard deviation (Santa Fe: 59.894 / 46.852). ``cv_mse`` is in standardised units (the
  report's ~0.05); the test metrics are in raw units (the report's ~3,000).
* **Cross-validation.** The history is cut into windows of ``lag`` values and the value that
  follows (:func:`sweeplab.datasets.base.windows`); scikit-learn's
  ``TimeSeriesSplit(n_splits=folds, test_size=validation_size, gap=lag)`` splits the windows, so
  every fold trains on the past only and no validation input overlaps a training target. One
  model per fold trains on its fold's past and is scored on its validation windows (one-step
  MSE); ``cv_mse`` is the mean over folds.
* **Test.** A final model trains on every window of the history; from the last ``lag`` values of
  the history it forecasts ``len(test)`` values (100 for Santa Fe) recursively, each prediction
  fed back as an input (:func:`sweeplab.models.sequence.recursive_forecast`), compared with the
  true continuation (``laserpred.dat``): ``test_mse``, ``test_rmse`` and ``test_nmse`` (MSE over
  the variance of the continuation, the competition's measure; 1 = predicting its mean).
* **Recursive cross-validation.** One-step errors say little about a 100-step iterated forecast,
  so each fold model also forecasts ``len(test)`` steps recursively from several origins in its
  validation fold, every ``cv_origin_every`` steps (``cv_forecast_mse``): a selection criterion
  that matches the test yet uses the training history only. Fed-back forecasts are clamped to the history's range
  (``clip_forecast``), so an unbounded net cannot run away to infinity.
* **Early stopping** (``early_stopping_patience > 0``): the epoch with the lowest ``select_on``
  (``cv_mse`` or ``cv_forecast_mse``) is kept: the cross-validation and test metrics are those of
  that epoch (the final model's forecast at it), and training stops after ``patience`` epochs
  without improvement. The test never chooses anything.

One iteration is one epoch of every model (the folds' and the final one), so ASHA can stop a
trial on ``cv_mse`` after any epoch. A validation split carved by ``data.val_fraction`` is put
back at the end of the history: cross-validation replaces it. ``media`` draws the forecast
against the truth for TensorBoard (``logging.media_every``).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from sweeplab.datasets.base import DataBundle, windows
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.optim import OptimizerConfig, build_optimizer, clip_gradients, count_params
from sweeplab.kit.tensors import batches
from sweeplab.metrics.convention import Metric
from sweeplab.models.sequence import build_forecaster, recursive_forecast


class TimeSeriesConfig(OptimizerConfig, FamilyConfig):
    """Hyperparameters of ``timeseries`` (optimizer fields from
    :class:`~sweeplab.kit.optim.OptimizerConfig`)."""

    model: Literal["mlp", "lstm"] = Field("mlp", description="mlp: the window as a vector; lstm: as a sequence")
    lag: int = Field(5, ge=1, le=500, description="past values in each input window")
    hidden: int = Field(10, ge=1, le=2048, description="hidden units (MLP) or LSTM hidden size")
    layers: int = Field(1, ge=1, le=8, description="hidden layers (MLP) or stacked LSTM layers")
    activation: Literal["relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu", "identity"] = Field(
        "relu", description="MLP hidden activation (identity = a linear AR model); the LSTM ignores it")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after hidden layers / between LSTM layers")
    folds: int = Field(4, ge=2, le=50, description="TimeSeriesSplit folds")
    validation_size: int = Field(200, ge=1, description="windows in each validation fold")
    gap: int | None = Field(None, ge=0, description="windows left out between a fold's training and "
                                                    "validation windows; default lag")
    epochs: int = Field(100, ge=1, description="epochs (= iterations) of every model")
    batch_size: int | None = Field(32, ge=1, description="windows per step; null = full batch")
    early_stopping_patience: int = Field(0, ge=0, description="0 = off; else keep the epoch of lowest select_on "
                                         "and stop after this many epochs without improvement")
    lbfgs_max_iter: int = Field(20, ge=1, description="LBFGS iterations per step")
    clip_forecast: bool = Field(True, description="clamp every fed-back forecast to the history's range")
    select_on: Literal["cv_mse", "cv_forecast_mse"] = Field(
        "cv_mse", description="the cross-validation measure early stopping keeps the best epoch of")
    cv_origin_every: int = Field(20, ge=1, description="steps between the origins of the recursive forecasts "
                                 "in each validation fold (cv_forecast_mse)")

    @model_validator(mode="after")
    def _full_batch_lbfgs(self) -> "TimeSeriesConfig":
        if self.optimizer == "lbfgs" and self.batch_size is not None:
            raise ValueError("optimizer lbfgs needs full batches: set batch_size: null")
        return self

    @property
    def effective_gap(self) -> int:
        """``gap``, or ``lag`` by default (the report's gap "corresponding to the lag")."""
        return self.lag if self.gap is None else self.gap


def history_of(data: DataBundle) -> np.ndarray:
    """The values known before the test continuation, ``float64 [T]``: the training series,
    followed by the validation split when ``data.val_fraction`` carved one off its end.

    Raises:
        ValueError: a series with more than one value per time step.
    """
    parts = [data.x_train] + ([data.x_val] if data.x_val is not None else [])
    series = np.concatenate([np.asarray(p, np.float64).reshape(len(p), -1) for p in parts])
    if series.shape[1] != 1:
        raise ValueError(f"timeseries forecasts a scalar series; dataset {data.name!r} has {series.shape[1]} "
                         "values per time step")
    return series[:, 0]


def cv_folds(n_windows: int, cfg: TimeSeriesConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, validation)`` window indices of scikit-learn's ``TimeSeriesSplit`` with
    ``n_splits=folds``, ``test_size=validation_size`` and ``gap`` (default ``lag``).

    Raises:
        ValueError: when the folds do not fit: ``folds * validation_size + gap`` must stay below
            the number of windows (the first fold needs a training window).
    """
    from sklearn.model_selection import TimeSeriesSplit

    need = cfg.folds * cfg.validation_size + cfg.effective_gap
    if need >= n_windows:
        raise ValueError(f"timeseries: folds * validation_size + gap = {cfg.folds} * {cfg.validation_size} + "
                         f"{cfg.effective_gap} = {need} needs more than the {n_windows} windows of lag {cfg.lag}; "
                         "lower folds, validation_size or lag")
    split = TimeSeriesSplit(n_splits=cfg.folds, test_size=cfg.validation_size, gap=cfg.effective_gap)
    return list(split.split(np.arange(n_windows)))


@register_family
class TimeSeriesForecaster(ModelFamily):
    """Sweepable Santa Fe style forecaster (see the module docstring)."""

    name: ClassVar[str] = "timeseries"
    Config: ClassVar[type[FamilyConfig]] = TimeSeriesConfig
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "ratio", "mean training MSE of the epoch over every model, standardised units "
               "(measured during training)"),
        Metric("cv_mse", "min", "ratio", "one-step MSE on the validation windows, mean over the TimeSeriesSplit "
               "folds, standardised units (at the kept epoch with early stopping)"),
        Metric("cv_forecast_mse", "min", "ratio", "MSE of each fold model's recursive len(test)-step forecasts "
               "from origins every cv_origin_every steps of its validation fold, mean over folds, standardised "
               "units (NMSE against the history's variance)"),
        Metric("test_mse", "min", "squared target units", "MSE of the recursive forecast against the true "
               "continuation, raw units"),
        Metric("test_rmse", "min", "target units", "square root of test_mse"),
        Metric("test_nmse", "min", "ratio", "test_mse / variance of the continuation (Santa Fe competition's "
               "NMSE; 1 = predicting its mean)"),
        Metric("best_epoch", None, "count", "1-based epoch whose models give the test metrics: the last, or the "
               "lowest select_on with early stopping"),
        Metric("num_params", "min", "count", "trainable parameters of one model"),
    )
    data_tasks: ClassVar[tuple[str, ...]] = ("series",)
    contract_config: ClassVar[dict[str, Any]] = {"epochs": 2, "lag": 3, "hidden": 4, "folds": 2,
                                                 "validation_size": 10, "batch_size": 16}

    def __init__(self, config: TimeSeriesConfig, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        history = history_of(data)
        self.mean, self.std = float(history.mean()), float(max(history.std(), 1e-12))
        self.history = torch.as_tensor((history - self.mean) / self.std, dtype=torch.float32, device=device)
        self.truth = np.asarray(data.x_test, np.float64).reshape(-1)
        inputs, targets = windows(self.history.cpu().numpy(), cfg.lag, 1)
        self._x = torch.as_tensor(np.array(inputs[:, :, 0], np.float32), device=device)  # [N, lag], a copy
        self._y = torch.as_tensor(np.array(targets[:, 0, 0], np.float32), device=device)  # [N]
        folds = cv_folds(len(self._x), cfg)
        self.train_idx = [torch.as_tensor(tr) for tr, _ in folds] + [torch.arange(len(self._x))]
        self.val_idx = [torch.as_tensor(va) for _, va in folds]
        self.models = torch.nn.ModuleList(
            build_forecaster(cfg.model, cfg.lag, cfg.hidden, cfg.layers, cfg.activation, cfg.dropout)
            for _ in self.train_idx).to(device)
        self.optimizers = [build_optimizer(m.parameters(), cfg, lbfgs_max_iter=cfg.lbfgs_max_iter)
                           for m in self.models]
        self.epochs_done, self.since_best = 0, 0
        self.kept: dict[str, float] = {}
        self.kept_forecast = torch.full((len(self.truth),), float("nan"))
        self._train_loss = math.nan

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Require a scalar ``series`` with a continuation to test on, long enough for the folds.

        Raises:
            ValueError: naming what does not fit.
        """
        super().check_data(data, config)
        n = len(history_of(data))
        if len(data.x_test) < 1:
            raise ValueError(f"timeseries needs a test continuation; dataset {data.name!r} has none")
        if n <= config.lag:
            raise ValueError(f"timeseries: lag {config.lag} needs a history longer than {n} values")
        cv_folds(n - config.lag, config)

    def extra_results(self) -> dict[str, float]:
        """``num_params`` of one model."""
        return {"num_params": count_params(self.models[0])}

    def _train_model(self, k: int) -> float:
        """One epoch of model ``k`` on its training windows; mean pre-step MSE (standardised)."""
        model, opt, idx = self.models[k], self.optimizers[k], self.train_idx[k]
        model.train()
        bs = self.config.batch_size
        total = 0.0
        for part in ([torch.arange(len(idx))] if bs is None else batches(len(idx), bs, shuffle=True,
                                                                        generator=self.generator)):
            rows = idx[part]
            xb, yb = self._x[rows], self._y[rows]
            first: list[float] = []

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                loss = (model(xb) - yb).square().mean()
                loss.backward()
                clip_gradients(model.parameters(), self.config.grad_clip)
                if not first:
                    first.append(float(loss.detach()))
                return loss

            if isinstance(opt, torch.optim.LBFGS):
                opt.step(closure)
            else:
                closure()
                opt.step()
            total += first[0] * len(rows)
        return total / len(idx)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch of every fold model and the final model (none once early stopping stopped).

        Returns:
            ``train_loss``: mean over models of their epoch's training MSE (standardised).
        """
        if not self.stopped:
            self._train_loss = float(np.mean([self._train_model(k) for k in range(len(self.models))]))
            self.epochs_done += 1
        return {"train_loss": self._train_loss}

    @property
    def stopped(self) -> bool:
        """True once early stopping ran out of patience."""
        p = self.config.early_stopping_patience
        return bool(p) and self.since_best >= p

    @torch.no_grad()
    def forecast(self) -> torch.Tensor:
        """The final model's recursive forecast of the continuation, raw units ``[len(test)]``."""
        model = self.models[-1].eval()
        steps = recursive_forecast(model, self.history, len(self.truth), self.config.lag, self._clamp)
        return steps.cpu().double() * self.std + self.mean

    @property
    def _clamp(self) -> tuple[float, float] | None:
        return (float(self.history.min()), float(self.history.max())) if self.config.clip_forecast else None

    @torch.no_grad()
    def cross_validate(self) -> dict[str, float]:
        """``cv_mse`` (one-step) and ``cv_forecast_mse``, means over folds, standardised units.

        ``cv_forecast_mse``: each fold model forecasts ``horizon = min(len(test),
        validation_size)`` steps recursively from origins every ``cv_origin_every`` steps of its
        validation fold (those whose horizon stays inside the fold; the values before an origin
        are known past, never a forecast), all origins in one batch."""
        one_step, recursive = [], []
        cfg = self.config
        lag, horizon = cfg.lag, min(len(self.truth), cfg.validation_size)
        offsets = torch.arange(0, cfg.validation_size - horizon + 1, cfg.cv_origin_every)
        for model, idx in zip(self.models[:-1], self.val_idx):
            model.eval()
            one_step.append(float((model(self._x[idx]) - self._y[idx]).square().mean()))
            starts = int(idx[0]) + lag + offsets  # times of the first forecast values
            past = self.history[starts[:, None] - lag + torch.arange(lag)]  # [origins, lag]
            truth = self.history[starts[:, None] + torch.arange(horizon)]  # [origins, horizon]
            pred = recursive_forecast(model, past, horizon, lag, self._clamp)
            recursive.append(float((pred - truth).square().mean()))
        return {"cv_mse": float(np.mean(one_step)), "cv_forecast_mse": float(np.mean(recursive))}

    def _test_metrics(self, forecast: torch.Tensor) -> dict[str, float]:
        mse = float(np.mean((forecast.numpy() - self.truth) ** 2))
        var = float(self.truth.var())
        return {"test_mse": mse, "test_rmse": math.sqrt(mse), "test_nmse": mse / var if var > 0 else math.nan}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """``cv_mse`` and the forecast's test metrics: of the current epoch, or of the kept one
        with early stopping."""
        if self.stopped:
            return dict(self.kept)
        cv = self.cross_validate()
        key = self.config.select_on
        if not self.config.early_stopping_patience or cv[key] < self.kept.get(key, math.inf):
            self.kept_forecast = self.forecast().float()
            self.kept = {**cv, **self._test_metrics(self.kept_forecast.double()),
                         "best_epoch": float(self.epochs_done)}
            self.since_best = 0
        else:
            self.since_best += 1
        return dict(self.kept)

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """``forecast``: the last 200 history values, the true continuation and the kept forecast
        as an RGB image ``[3, H, W]`` in [0, 1] (matplotlib, Agg)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        hist = self.history.cpu().double().numpy() * self.std + self.mean
        t0, n = len(hist), len(self.truth)
        fig, ax = plt.subplots(figsize=(8, 3), dpi=80)
        ax.plot(np.arange(max(0, t0 - 200), t0), hist[-200:], color="0.6", lw=1, label="history")
        ax.plot(np.arange(t0, t0 + n), self.truth, color="k", lw=1.2, label="truth")
        ax.plot(np.arange(t0, t0 + n), self.kept_forecast.numpy(), color="tab:red", lw=1.2,
                label=f"forecast (NMSE {self.kept.get('test_nmse', math.nan):.3f})")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_xlabel("time step")
        fig.tight_layout()
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
        plt.close(fig)
        return {"forecast": torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0}

    def state_dict(self) -> dict[str, Any]:
        """Every model and optimizer, the epoch counters and what early stopping kept."""
        return {"models": self.models.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers],
                "epochs_done": self.epochs_done, "since_best": self.since_best, "kept": dict(self.kept),
                "kept_forecast": self.kept_forecast, "train_loss": self._train_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.models.load_state_dict(state["models"])
        for opt, s in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        self.epochs_done, self.since_best = int(state["epochs_done"]), int(state["since_best"])
        self.kept = {k: float(v) for k, v in state["kept"].items()}
        self.kept_forecast = state["kept_forecast"].cpu()
        self._train_loss = float(state["train_loss"])
