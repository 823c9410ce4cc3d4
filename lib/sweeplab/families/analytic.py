"""``analytic``: an analytic test function with a known global minimum, as a sweepable family.

A trivial family beside the real ones, for two jobs: measuring search efficiency (how much
budget a sampler and scheduler need to come within a set distance of the known optimum) and
benchmarking the sweep machinery itself (trials that cost nothing but an optional sleep).

The trial's hyperparameters are the function's coordinates ``x1 .. x<d>`` (Branin: 2-D,
Hartmann-6: 6-D; functions, domains and minima in :mod:`sweeplab.models.analytic`, after
Dixon & Szegő 1978 and Surjanovic & Bingham's Virtual Library of Simulation Experiments).

**Fidelity.** Each iteration is one more unit of budget: one more noisy evaluation
``f(x) + e_t``, ``e_t ~ N(0, sigma_0^2)`` drawn from the trial's seed. The reported
``val_value`` after ``t`` iterations is the mean of the ``t`` evaluations so far, so its noise
is ``sigma_0 / sqrt(t)``: a low budget is noisier, a longer trial's estimate sharpens, and ASHA's
rungs compare noisier estimates than the final ones, as with a learning curve. ``regret`` is the
noiseless ``f(x) - f*``, the distance from the optimum a search is judged by (never optimised).

Reported every iteration: ``val_value`` (the noisy estimate; the objective), ``regret``,
``train_loss`` (this iteration's single noisy evaluation). ``sleep_seconds`` makes each iteration
last that long (trials of a known cost for the scale benchmarks, ``bench/bench_trial_scale.py``).
The family needs no data: its jobs name the ``none`` dataset.
"""
from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.metrics.convention import Metric
from sweeplab.models.analytic import FUNCTIONS, TestFunction

#: Most coordinates of any function (Hartmann-6).
MAX_DIM = 6


def _coordinate(i: int) -> Any:
    return Field(None, description=f"coordinate x{i} (default: the centre of its domain); only the first "
                                   "d coordinates exist for a d-dimensional function")


@register_family
class AnalyticFamily(ModelFamily):
    """An analytic function evaluated with noise that shrinks with budget; see the module docstring."""

    name: ClassVar[str] = "analytic"

    class Config(FamilyConfig):
        """Hyperparameters of ``analytic``: the function, the point, the budget and its noise."""

        function: Literal["branin", "hartmann6"] = Field(
            "branin", description="branin (2-D, x1 in [-5, 10], x2 in [0, 15]) | hartmann6 (6-D, [0, 1]^6)")
        x1: float | None = _coordinate(1)
        x2: float | None = _coordinate(2)
        x3: float | None = _coordinate(3)
        x4: float | None = _coordinate(4)
        x5: float | None = _coordinate(5)
        x6: float | None = _coordinate(6)
        budget: int = Field(27, ge=1, description="iterations: units of budget, one noisy evaluation each")
        noise_sd: float | None = Field(
            None, ge=0.0, description="sigma_0, the noise of one evaluation in the function's units "
                                      "(default: the function's own, 5.0 for branin, 0.1 for hartmann6)")
        sleep_seconds: float = Field(0.0, ge=0.0, description="seconds each iteration sleeps (benchmarks)")

        @model_validator(mode="after")
        def _check_point(self) -> "AnalyticFamily.Config":
            fn = FUNCTIONS[self.function]
            for i in range(1, MAX_DIM + 1):
                value = getattr(self, f"x{i}")
                if i > fn.dim and value is not None:
                    raise ValueError(f"x{i}={value}: {fn.name} is {fn.dim}-D, it has only x1..x{fn.dim}")
                if i <= fn.dim and value is not None:
                    low, high = fn.bounds[i - 1]
                    if not (low <= value <= high):
                        raise ValueError(f"x{i}={value} is outside {fn.name}'s domain [{low}, {high}]")
            return self

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "target units", "this iteration's single noisy evaluation f(x) + e_t"),
        Metric("val_value", "min", "target units", "mean of the noisy evaluations so far: f(x) plus noise "
                                                  "of sd sigma_0 / sqrt(iterations)"),
        Metric("regret", "min", "target units", "f(x) - f*, noiseless distance from the known global "
                                                "minimum (Surjanovic & Bingham)"),
    )
    data_tasks: ClassVar[tuple[str, ...]] = ("unlabelled",)
    contract_config: ClassVar[dict[str, Any]] = {"function": "branin", "x1": 1.0, "x2": 3.0, "budget": 2}
    contract_data: ClassVar[dict[str, Any]] = {"task": "unlabelled", "sample_shape": (1,)}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        self.function: TestFunction = FUNCTIONS[config.function]
        self.point = point_of(config)
        self.value = float(self.function(self.point))
        self.sigma = self.function.noise_sd if config.noise_sd is None else float(config.noise_sd)
        self.noise_sum = 0.0
        self.evaluations = 0

    @classmethod
    def num_iterations_of(cls, config: FamilyConfig) -> int:
        """``budget``."""
        return int(config.budget)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One more noisy evaluation (after ``sleep_seconds``); returns ``train_loss``."""
        if self.config.sleep_seconds:
            time.sleep(self.config.sleep_seconds)
        noise = self.sigma * float(torch.randn((), generator=self.generator, dtype=torch.float64))
        self.noise_sum += noise
        self.evaluations += 1
        return {"train_loss": self.value + noise}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """``val_value`` (mean of the evaluations so far) and ``regret``."""
        return {"val_value": self.value + self.noise_sum / max(1, self.evaluations),
                "regret": self.value - self.function.f_star}

    def state_dict(self) -> dict[str, Any]:
        """The noise drawn so far (the family's generator is checkpointed by the kit)."""
        return {"noise_sum": self.noise_sum, "evaluations": self.evaluations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.noise_sum = float(state["noise_sum"])
        self.evaluations = int(state["evaluations"])


def point_of(config: AnalyticFamily.Config) -> np.ndarray:
    """The config's point, ``float64 [d]``: ``x1 .. x<d>``, each missing one at its domain's centre."""
    fn = FUNCTIONS[config.function]
    values = [getattr(config, f"x{i + 1}") for i in range(fn.dim)]
    return np.array([0.5 * (lo + hi) if v is None else v for v, (lo, hi) in zip(values, fn.bounds)])


def noise_sd_at(config: AnalyticFamily.Config, iterations: int) -> float:
    """The standard deviation of ``val_value`` after ``iterations`` (>= 1): ``sigma_0 / sqrt(t)``."""
    sigma = FUNCTIONS[config.function].noise_sd if config.noise_sd is None else config.noise_sd
    return sigma / math.sqrt(max(1, iterations))
