"""``hopfield``: a Hopfield network as a sweepable family, without gradient training.

Source: ``../shared/specs/ann_course.md`` §3 (the course report's §2.1); model in
:mod:`sweeplab.models.hopfield`. The network is built once from the data (``rule: newhop``, MATLAB's
construction, or ``hebbian``); a trial's iterations are batches of probes, so the same sweep
machinery, tables and ASHA apply: ``probe_batches`` iterations of ``probes_per_pattern`` starts per
stored pattern, every metric a running value over all probes so far (later iterations only
sharpen the estimates).

Stored patterns: one per class of the training split, flattened and binarised to ±1 at
``threshold`` (pixels scaled to [0, 1]): the class's first sample (``prototype: first``, the spec's
choice for MNIST: the first training image of each digit) or the class mean (``mean``). With
``hopfield_patterns`` (Q1, Q2) the samples are the ±1 patterns themselves.

Starts: ``noisy`` (each stored pattern plus ``noise``: additive Gaussian noise of standard
deviation ``noise_level``, the spec's reading of the report's Q3, or sign flips with probability
``noise_level``), ``random`` (uniform in ``[-1, 1]^N``) or ``symmetric`` (every point of
``{-1, 0, 1}^N``, N <= 10: the same starts every batch). A start's *source* is the pattern it was
made from; for random and symmetric starts, the stored pattern nearest to it.

Reported after every batch (running over every probe so far; the probes test the memory, so they
are ``test_`` metrics): ``test_retrieval_accuracy`` (sign of the final state = the source pattern),
``test_nearest_accuracy`` (the stored pattern nearest the final state is the source),
``test_target_fraction`` (ended exactly on a stored pattern), ``test_spurious_fraction`` (stopped
on a state that is not a stored pattern), ``test_unconverged_fraction`` (still changing after
``max_steps``), ``test_iterations`` (mean updates until the state stopped changing, censored at
``max_steps``), ``test_energy`` (mean energy of the final states), ``test_energy_rise_fraction``
(probes whose energy rose at some update), ``test_attractors`` and ``test_spurious_attractors``
(distinct stopping states found so far, and those not stored); ``probes_seen``; constant
``num_neurons``, ``num_patterns``. The table of every attractor is
:func:`sweeplab.models.hopfield.attractor_table`; the family checkpoints its attractors
(``attractors``, ``attractor_counts`` in its state).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from sweeplab.datasets.base import DataBundle
from sweeplab.kit.evaluation import eval_generator
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.metrics.convention import Metric
from sweeplab.models.hopfield import (MATCH_TOL, HopfieldNetwork, noisy_probes, random_starts,
                                      symmetric_starts)

#: Running tallies over every probe so far (sums; the metrics divide by ``probes``).
_TALLIES = ("probes", "retrieved", "nearest", "target", "spurious", "unconverged", "steps", "energy", "rose")


@register_family
class HopfieldFamily(ModelFamily):
    """Hopfield network (``newhop`` or ``hebbian``) probed in batches; see the module docstring."""

    name: ClassVar[str] = "hopfield"

    class Config(FamilyConfig):
        """Hyperparameters of ``hopfield``; defaults are the spec's Q3 settings."""

        rule: Literal["newhop", "hebbian"] = Field(
            "newhop", description="newhop: MATLAB's construction, satlins updates; hebbian: outer products, "
                                  "zero diagonal, sign updates")
        starts: Literal["noisy", "random", "symmetric"] = Field(
            "noisy", description="noisy copies of the stored patterns | uniform in [-1, 1]^N | every point "
                                 "of {-1, 0, 1}^N")
        noise: Literal["gaussian", "flip"] = Field(
            "gaussian", description="noisy starts: additive N(0, noise_level^2) | sign flips with probability "
                                    "noise_level")
        noise_level: float = Field(0.0, ge=0.0, description="noise std (gaussian) or flip probability (flip)")
        probes_per_pattern: int = Field(20, ge=1, description="noisy/random starts per stored pattern per batch")
        probe_batches: int = Field(1, ge=1, description="iterations: batches of probes")
        max_steps: int = Field(50, ge=1, description="most synchronous updates per probe (the report's num_iter)")
        tol: float = Field(1e-10, gt=0.0, description="a state that moves by at most tol (max-norm) has stopped")
        newhop_h: float = Field(0.15, gt=0.0, description="newhop's h (MATLAB 0.15)")
        newhop_tau: float = Field(10.0, gt=0.0, description="newhop's tau (MATLAB 10)")
        prototype: Literal["first", "mean"] = Field(
            "first", description="stored pattern of a class: its first training sample | its mean")
        threshold: float | None = Field(
            None, description="binarise at this value (pixels scaled to [0, 1]); default 0.5 for data in "
                              "[0, 1], 0 for data with negative values")

        @model_validator(mode="after")
        def _check_flip(self) -> "HopfieldFamily.Config":
            if self.noise == "flip" and self.noise_level > 1:
                raise ValueError(f"noise_level={self.noise_level} with noise flip is a probability: at most 1")
            return self

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("test_retrieval_accuracy", "max", "fraction", "sign(final state) equals the probe's source pattern"),
        Metric("test_nearest_accuracy", "max", "fraction", "the stored pattern nearest the final state is the source"),
        Metric("test_target_fraction", "max", "fraction", "final state equals a stored pattern (within 1e-6)"),
        Metric("test_spurious_fraction", "min", "fraction", "stopped on a state that is not a stored pattern"),
        Metric("test_unconverged_fraction", "min", "fraction", "still changing after max_steps updates"),
        Metric("test_iterations", "min", "count", "mean updates until the state stopped changing "
                                                 "(censored at max_steps)"),
        Metric("test_energy", "min", "ratio", "mean energy -x'Wx/2 - b'x - sum(1 - x_i^2)/2 of the final states"),
        Metric("test_energy_rise_fraction", "min", "fraction", "probes whose energy rose at some update"),
        Metric("test_attractors", None, "count", "distinct stopping states found so far"),
        Metric("test_spurious_attractors", "min", "count", "distinct stopping states that are not stored patterns"),
        Metric("probes_seen", None, "count", "probes run so far"),
        Metric("num_neurons", None, "count", "N, neurons (= input dimensions)"),
        Metric("num_patterns", None, "count", "Q, stored patterns (= classes)"),
    )
    loss_metric: ClassVar[str] = "test_energy"
    data_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    contract_config: ClassVar[dict[str, Any]] = {"probe_batches": 2, "probes_per_pattern": 3, "noise_level": 0.5}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        self.net = HopfieldNetwork(torch.from_numpy(stored_patterns(data, config)), config.rule,
                                   config.newhop_h, config.newhop_tau)
        self.tally = {k: 0.0 for k in _TALLIES}
        self.attractors = torch.zeros(0, self.net.num_neurons, dtype=torch.float64)
        self.attractor_counts = torch.zeros(0, dtype=torch.int64)
        self._keys: dict[bytes, int] = {}

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Raise ``ValueError`` for data of another task, or a class without training samples,
        or ``starts: symmetric`` with more than 10 neurons."""
        super().check_data(data, config)
        present = np.unique(data.y_train)
        if len(present) != data.num_classes or (data.y_train < 0).any():
            raise ValueError(f"hopfield stores one pattern per class: dataset {data.name!r} has "
                             f"{data.num_classes} classes but training samples of {len(present)} (labels -1 "
                             "are not allowed)")
        n = int(np.prod(data.sample_shape))
        if getattr(config, "starts", None) == "symmetric" and n > 10:
            raise ValueError(f"hopfield starts: symmetric enumerates 3^N points; dataset {data.name!r} has "
                             f"N = {n} neurons (at most 10): use starts noisy or random")

    @classmethod
    def num_iterations_of(cls, config: FamilyConfig) -> int:
        """``probe_batches``."""
        return int(config.probe_batches)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """Run one batch of probes to a stop and return every metric, running over all batches so far."""
        starts, source = self._starts()
        out = self.net.run(starts, self.config.max_steps, self.config.tol)
        matched = self.net.match(out.final)
        t = self.tally
        t["probes"] += len(starts)
        t["retrieved"] += float((torch.sign(out.final) == self.net.patterns[source]).all(-1).sum())
        t["nearest"] += float((self.net.nearest(out.final) == source).sum())
        t["target"] += float((out.converged & (matched >= 0)).sum())
        t["spurious"] += float((out.converged & (matched < 0)).sum())
        t["unconverged"] += float((~out.converged).sum())
        t["steps"] += float(out.steps.sum())
        t["energy"] += float(out.energy.sum())
        t["rose"] += float(out.energy_rose.sum())
        self._record_attractors(out.final[out.converged])
        return self._metrics()

    def evaluate(self, iteration: int) -> dict[str, float]:
        """Nothing more: :meth:`train_iteration` probes and reports."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The running tallies and the attractors found (the network is rebuilt from the data)."""
        return {"tally": dict(self.tally), "attractors": self.attractors.clone(),
                "attractor_counts": self.attractor_counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.tally = {k: float(v) for k, v in state["tally"].items()}
        self.attractors = state["attractors"].to(torch.float64).cpu()
        self.attractor_counts = state["attractor_counts"].to(torch.int64).cpu()
        self._keys = {_key(s): i for i, s in enumerate(self.attractors)}

    def extra_results(self) -> dict[str, float]:
        """``num_neurons`` and ``num_patterns``."""
        return {"num_neurons": float(self.net.num_neurons), "num_patterns": float(len(self.net.patterns))}

    def media(self, iteration: int) -> dict[str, torch.Tensor]:
        """For image data: ``retrieval`` grid, a row each of the stored patterns, one noisy probe
        of each (fixed seed, clipped to [-1, 1]) and where it stopped, mapped to [0, 1]."""
        from torchvision.utils import make_grid

        if not self.data.is_image:
            return {}
        gen = eval_generator(self.config.seed, 0)
        probes, _ = noisy_probes(self.net.patterns, 1, self.config.noise_level, self.config.noise, gen)
        final = self.net.run(probes, self.config.max_steps, self.config.tol).final
        rows = torch.cat([self.net.patterns, probes.clamp(-1, 1), final]).float()
        images = ((rows + 1) / 2).reshape(-1, *self.data.sample_shape)
        return {"retrieval": make_grid(images, nrow=len(self.net.patterns), padding=2, pad_value=0.5)}

    # -- internals ------------------------------------------------------------------------------
    def _starts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This batch's ``[B, N]`` starts and ``[B]`` source patterns, from the family's RNG."""
        cfg, pats = self.config, self.net.patterns
        if cfg.starts == "noisy":
            return noisy_probes(pats, cfg.probes_per_pattern, cfg.noise_level, cfg.noise, self.generator)
        if cfg.starts == "random":
            starts = random_starts(cfg.probes_per_pattern * len(pats), self.net.num_neurons, self.generator)
        else:
            starts = symmetric_starts(self.net.num_neurons)
        return starts, self.net.nearest(starts)

    def _record_attractors(self, states: torch.Tensor) -> None:
        """Count each stopping state, adding the ones not seen before."""
        counts = self.attractor_counts.tolist()
        new = []
        for s in states:
            k = _key(s)
            if k not in self._keys:
                self._keys[k] = len(counts)
                counts.append(0)
                new.append(s)
            counts[self._keys[k]] += 1
        if new:
            self.attractors = torch.cat([self.attractors, torch.stack(new)])
        self.attractor_counts = torch.tensor(counts, dtype=torch.int64)

    def _metrics(self) -> dict[str, float]:
        t = self.tally
        n = max(t["probes"], 1.0)
        spurious_states = int((self.net.match(self.attractors) < 0).sum()) if len(self.attractors) else 0
        return {"test_retrieval_accuracy": t["retrieved"] / n, "test_nearest_accuracy": t["nearest"] / n,
                "test_target_fraction": t["target"] / n, "test_spurious_fraction": t["spurious"] / n,
                "test_unconverged_fraction": t["unconverged"] / n, "test_iterations": t["steps"] / n,
                "test_energy": t["energy"] / n, "test_energy_rise_fraction": t["rose"] / n,
                "test_attractors": float(len(self.attractors)), "test_spurious_attractors": float(spurious_states),
                "probes_seen": t["probes"]}


def _key(state: torch.Tensor) -> bytes:
    """A hashable key of a state, equal for states that agree to :data:`MATCH_TOL`'s rounding."""
    return torch.round(state / MATCH_TOL).to(torch.int64).numpy().tobytes()


def stored_patterns(data: DataBundle, config: HopfieldFamily.Config) -> np.ndarray:
    """One ±1 pattern per class of the training split: ``float64 [Q, N]`` (module docstring).

    The samples are flattened and scaled to [0, 1] when they are ``uint8``; ``threshold`` (default
    0.5 for data in [0, 1], else 0) splits them: above it +1, else -1.
    """
    x = data.x_train.reshape(len(data.x_train), -1)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    if config.threshold is not None:
        threshold = config.threshold
    else:
        threshold = 0.5 if x.dtype == np.uint8 or float(x.min()) >= 0 else 0.0
    rows = []
    for c in range(int(data.num_classes)):
        members = np.flatnonzero(data.y_train == c)
        if config.prototype == "first":
            rows.append(x[members[0]].astype(np.float64) / scale)
        else:
            rows.append(x[members].mean(0, dtype=np.float64) / scale)
    return np.where(np.stack(rows) > threshold, 1.0, -1.0)
