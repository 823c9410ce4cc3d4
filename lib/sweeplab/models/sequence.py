"""One-step forecasters of a scalar series from a window of ``lag`` past values, and the
recursive multi-step forecast.

Source: ``../shared/specs/ann_course.md`` §2 (the course's Santa Fe MLP and LSTM). Both models
map a window ``[B, lag]`` (oldest value first) to the next value ``[B]``:

* :class:`MLPForecaster`: the window as a vector through an :class:`~sweeplab.models.mlp.MLP`
  (the spec's ``Linear(lag, H) -> act -> Linear(H, 1)`` with ``layers=1``).
* :class:`LSTMForecaster`: the window as a sequence of ``lag`` one-feature steps through
  ``nn.LSTM`` (Hochreiter & Schmidhuber 1997), a linear head on the last step's hidden state.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from sweeplab.models.mlp import MLP


class MLPForecaster(nn.Module):
    """``[B, lag]`` -> ``[B]`` through an MLP (see :class:`~sweeplab.models.mlp.MLP` for the args)."""

    def __init__(self, lag: int, hidden: int = 10, layers: int = 1, activation: str = "relu",
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.net = MLP(lag, 1, hidden=hidden, layers=layers, activation=activation, dropout=dropout)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """``[B, lag]`` windows -> ``[B]`` next values."""
        return self.net(window).squeeze(-1)


class LSTMForecaster(nn.Module):
    """``[B, lag]`` -> ``[B]`` through ``nn.LSTM(1, hidden, layers, batch_first=True)``.

    Args:
        hidden: LSTM hidden size.
        layers: stacked LSTM layers (>= 1).
        dropout: dropout between stacked layers (PyTorch's; ignored with one layer) and on the
            last hidden state before the head.

    Raises:
        ValueError: ``hidden`` or ``layers`` below 1, dropout outside ``[0, 1)``.
    """

    def __init__(self, hidden: int = 10, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden < 1 or layers < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"LSTMForecaster needs hidden, layers >= 1 and dropout in [0, 1); got "
                             f"{hidden}, {layers}, {dropout}")
        self.lstm = nn.LSTM(1, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(hidden, 1)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """``[B, lag]`` windows -> ``[B]`` next values."""
        out, _ = self.lstm(window.unsqueeze(-1))
        return self.head(self.drop(out[:, -1])).squeeze(-1)


def build_forecaster(model: str, lag: int, hidden: int, layers: int, activation: str = "relu",
                     dropout: float = 0.0) -> nn.Module:
    """``model`` ``"mlp"`` or ``"lstm"`` (the LSTM ignores ``activation``: its gates are fixed).

    Raises:
        ValueError: an unknown model or invalid sizes.
    """
    if model == "mlp":
        return MLPForecaster(lag, hidden, layers, activation, dropout)
    if model == "lstm":
        return LSTMForecaster(hidden, layers, dropout)
    raise ValueError(f"unknown forecaster {model!r}; choose mlp or lstm")


@torch.no_grad()
def recursive_forecast(predict: Callable[[torch.Tensor], torch.Tensor], history: torch.Tensor,
                       steps: int, lag: int, clamp: tuple[float, float] | None = None) -> torch.Tensor:
    """Forecast ``steps`` values ahead by feeding each prediction back as an input.

    The first window is the last ``lag`` values of ``history``; every prediction is appended and
    the window slides by one (the Santa Fe competition's iterated forecast). A 2-D history
    forecasts from several origins at once, one per row (one forward pass a step for all).

    Args:
        predict: ``[B, lag]`` windows -> ``[B]`` next values (a forecaster in eval mode).
        history: ``[T]`` values known before the forecast, or ``[B, T]`` for B origins; ``T >= lag``.
        steps: values to forecast (>= 1).
        lag: window length.
        clamp: ``(low, high)``: every prediction is clamped to this range before it is fed back
            (keeps an unbounded model from running away to infinity); ``None`` = no clamp.

    Returns:
        ``[steps]`` (or ``[B, steps]``) forecasts, on ``history``'s device and dtype.

    Raises:
        ValueError: a history shorter than ``lag`` or ``steps < 1``.
    """
    if history.ndim not in (1, 2) or history.shape[-1] < lag or steps < 1:
        raise ValueError(f"recursive_forecast needs a [T] or [B, T] history of at least lag={lag} values and "
                         f"steps >= 1; got shape {tuple(history.shape)}, steps={steps}")
    rows = history.reshape(-1, history.shape[-1])
    buffer = torch.cat([rows[:, -lag:], rows.new_zeros(len(rows), steps)], dim=1)
    for t in range(steps):
        value = predict(buffer[:, t:t + lag]).reshape(len(rows))
        buffer[:, lag + t] = value if clamp is None else value.clamp(clamp[0], clamp[1])
    out = buffer[:, lag:].clone()
    return out[0] if history.ndim == 1 else out
