"""Hopfield networks with synchronous updates: MATLAB ``newhop`` and the Hebbian outer-product rule.

Source: ``../shared/specs/ann_course.md`` §3 (the course report's §2.1). Two constructions:

* ``newhop`` (Li, Michel & Porod 1989, "Analysis and synthesis of a class of neural networks:
  linear systems operating on a closed hypercube", as in MATLAB's ``newhop``): with stored
  patterns ``t_1 .. t_Q`` (columns, entries ±1), ``Y = [t_1 - t_Q, ..., t_{Q-1} - t_Q] = U S V^T`` of
  rank K, ``T = P_K - tau P_perp`` (``P_K`` the projector on the first K left singular vectors),
  ``I = t_Q - T t_Q``, ``W = expm(h T)`` and ``b = U diag(e^h - 1 (K times), (1 - e^{-tau h}) / tau) U^T I``
  with MATLAB's ``h = 0.15``, ``tau = 10``; the state is updated synchronously,
  ``x <- satlins(W x + b)`` (``satlins`` clips to [-1, 1]). Because ``T`` is symmetric with
  eigenvalues 1 and ``-tau``, ``expm(h T) = e^h P_K + e^{-tau h} P_perp`` exactly; that is what is
  computed (the tests check it against ``scipy.linalg.expm``).
* ``hebbian``: ``W = (1/N) sum_q t_q t_q^T`` with a zero diagonal, ``b = 0``, synchronous sign
  updates ``x <- sign(W x)`` (a zero field keeps the sign of the current value, +1 for 0).

Energy: ``E(x) = -1/2 x^T W x - b^T x - 1/2 sum_i (1 - x_i^2)`` on the state space ``[-1, 1]^N``. On
the hypercube's corners it is the classic Hopfield energy ``-1/2 x^T W x - b^T x``; inside, the
last term is the analog network's activation integral (Hopfield 1984) for ``satlins``, which makes
``E`` a Lyapunov function of the synchronous ``satlins`` update whenever ``W + I`` is positive
semi-definite (``newhop``'s ``W`` is positive definite): ``E(x') - E(x) <= -1/2 d^T (W + I) d`` with
``d = x' - x``. Synchronous sign updates with a Hebbian ``W`` (not positive semi-definite) may
raise it and may end in 2-cycles (Bruck 1990).

Everything here is float64: ``tol`` (1e-10 in the spec) is below float32's resolution.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Literal

import torch

Rule = Literal["newhop", "hebbian"]
#: Distance (max-norm) under which a final state counts as equal to a stored pattern or to
#: another attractor.
MATCH_TOL = 1e-6


def newhop_weights(patterns: torch.Tensor, h: float = 0.15, tau: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and biases of MATLAB's ``newhop`` for ``patterns`` (see the module docstring).

    Args:
        patterns: ``[Q, N]`` stored patterns with entries ±1 (any float dtype; computed in float64).
        h: the step ``h`` of ``W = expm(h T)`` (MATLAB: 0.15).
        tau: the weight ``tau`` of the orthogonal complement (MATLAB: 10).

    Returns:
        ``(W [N, N], b [N])`` in float64; ``W`` is symmetric positive definite.

    Raises:
        ValueError: no patterns, or entries other than ±1.
    """
    t = _check_patterns(patterns).T  # [N, Q], one pattern a column as in MATLAB
    n, q = t.shape
    y = t[:, :-1] - t[:, -1:]
    u, s, _ = torch.linalg.svd(y, full_matrices=True) if q > 1 else (torch.eye(n, dtype=t.dtype), None, None)
    k = 0 if s is None else int((s > max(y.shape) * torch.finfo(t.dtype).eps * s.max().clamp_min(1e-300)).sum())
    p_k = u[:, :k] @ u[:, :k].T
    p_perp = torch.eye(n, dtype=t.dtype) - p_k
    t_tau = p_k - tau * p_perp
    i_tau = t[:, -1] - t_tau @ t[:, -1]
    w = math.exp(h) * p_k + math.exp(-tau * h) * p_perp
    c1, c2 = math.exp(h) - 1.0, (1.0 - math.exp(-tau * h)) / tau
    b = c1 * (p_k @ i_tau) + c2 * (p_perp @ i_tau)
    return w, b


def hebbian_weights(patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hebbian outer-product weights ``W = (1/N) sum_q t_q t_q^T`` with a zero diagonal, ``b = 0``.

    Args:
        patterns: ``[Q, N]`` stored patterns with entries ±1.

    Returns:
        ``(W [N, N], b [N])`` in float64.

    Raises:
        ValueError: no patterns, or entries other than ±1.
    """
    t = _check_patterns(patterns)
    n = t.shape[1]
    w = t.T @ t / n
    w.fill_diagonal_(0.0)
    return w, torch.zeros(n, dtype=t.dtype)


def _check_patterns(patterns: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(patterns, dtype=torch.float64)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"patterns must be a [Q, N] array with Q >= 1 patterns, got shape {tuple(t.shape)}")
    if not bool(((t == 1) | (t == -1)).all()):
        raise ValueError("stored patterns must have entries +1 or -1 only (binarise them first)")
    return t


@dataclasses.dataclass
class Retrieval:
    """What :meth:`HopfieldNetwork.run` returns for a batch of ``B`` starts.

    Attributes:
        final: ``[B, N]`` float64 state after the last update.
        steps: ``[B]`` int64 updates that changed the state before it stopped changing (0 for a
            fixed point); ``max_steps`` for a start that never stopped.
        converged: ``[B]`` bool, the state stopped changing within ``max_steps`` updates.
        energy: ``[B]`` float64 energy of the final state.
        energy_rose: ``[B]`` bool, the energy rose (by more than 1e-9 relative) at some update
            between states (:meth:`HopfieldNetwork.is_state`; a start that is not a state, such as
            a noisy probe outside the box, is an input).
        energies: ``[steps + 1, B]`` energy of every state, when asked for.
    """

    final: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    energy: torch.Tensor
    energy_rose: torch.Tensor
    energies: torch.Tensor | None = None


class HopfieldNetwork:
    """A Hopfield network storing ``patterns`` with the construction ``rule`` (module docstring).

    Args:
        patterns: ``[Q, N]`` stored patterns, entries ±1.
        rule: ``newhop`` (satlins activation) or ``hebbian`` (sign activation).
        h, tau: ``newhop``'s constants (MATLAB: 0.15 and 10); ignored by ``hebbian``.

    Attributes:
        patterns: ``[Q, N]`` float64. weights: ``[N, N]``. bias: ``[N]``.

    Raises:
        ValueError: bad patterns or an unknown rule.
    """

    def __init__(self, patterns: torch.Tensor, rule: Rule = "newhop", h: float = 0.15, tau: float = 10.0) -> None:
        self.patterns = _check_patterns(patterns)
        self.rule = rule
        if rule == "newhop":
            self.weights, self.bias = newhop_weights(self.patterns, h, tau)
        elif rule == "hebbian":
            self.weights, self.bias = hebbian_weights(self.patterns)
        else:
            raise ValueError(f"rule must be newhop or hebbian, not {rule!r}")

    @property
    def num_neurons(self) -> int:
        """N."""
        return int(self.patterns.shape[1])

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One synchronous update of every neuron: ``[B, N] -> [B, N]`` (float64)."""
        field = x @ self.weights + self.bias  # W is symmetric: x W = (W x)^T
        if self.rule == "newhop":
            return field.clamp(-1.0, 1.0)
        keep = torch.where(x < 0, -1.0, 1.0).to(field.dtype)
        return torch.where(field > 0, 1.0, torch.where(field < 0, -1.0, keep)).to(field.dtype)

    def is_state(self, x: torch.Tensor) -> torch.Tensor:
        """``[B]`` bool: each row is a state of the network, in ``[-1, 1]^N`` (``newhop``) or a
        corner of it (``hebbian``), not just an input."""
        if self.rule == "newhop":
            return (x.abs() <= 1.0).all(-1)
        return (x.abs() == 1.0).all(-1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x) = -1/2 x^T W x - b^T x - 1/2 sum_i (1 - x_i^2)`` of states ``[B, N]`` -> ``[B]``."""
        return -0.5 * ((x @ self.weights) * x).sum(-1) - x @ self.bias - 0.5 * (1.0 - x * x).sum(-1)

    def run(self, starts: torch.Tensor, max_steps: int = 50, tol: float = 1e-10,
            keep_energies: bool = False) -> Retrieval:
        """Update ``starts`` synchronously until no state changes by more than ``tol`` (max-norm)
        or ``max_steps`` updates were made.

        Args:
            starts: ``[B, N]`` initial states (noisy probes may lie outside ``[-1, 1]^N``).
            max_steps: the most updates per start (the report's ``num_iter``: 50).
            tol: a state whose update moves it by at most ``tol`` has stopped changing.
            keep_energies: also return the energy of every state.

        Returns:
            A :class:`Retrieval`.
        """
        x = torch.as_tensor(starts, dtype=torch.float64).clone()
        b = x.shape[0]
        steps = torch.zeros(b, dtype=torch.int64)
        active = torch.ones(b, dtype=torch.bool)
        rose = torch.zeros(b, dtype=torch.bool)
        e = self.energy(x)
        in_box = self.is_state(x)
        energies = [e.clone()] if keep_energies else None
        for _ in range(max_steps):
            if not bool(active.any()):
                break
            new = self.step(x[active])
            moved = (new - x[active]).abs().amax(-1) > tol
            idx = active.nonzero().squeeze(1)
            e_new = self.energy(new)
            rose[idx] |= moved & in_box[idx] & (e_new > e[idx] + 1e-9 * e[idx].abs().clamp_min(1.0))
            x[idx] = torch.where(moved[:, None], new, x[idx])
            e[idx] = torch.where(moved, e_new, e[idx])
            in_box[idx] = True
            steps[idx] += moved.long()
            active[idx] = moved
            if energies is not None:
                energies.append(e.clone())
        return Retrieval(final=x, steps=steps, converged=~active, energy=e, energy_rose=rose,
                         energies=None if energies is None else torch.stack(energies))

    def match(self, states: torch.Tensor) -> torch.Tensor:
        """Index of the stored pattern each state equals (within :data:`MATCH_TOL`), -1 for none:
        ``[B, N] -> [B]`` int64."""
        dist = (states[:, None, :] - self.patterns[None]).abs().amax(-1)  # [B, Q]
        best = dist.argmin(-1)
        return torch.where(dist.gather(1, best[:, None]).squeeze(1) <= MATCH_TOL, best, -1)

    def nearest(self, states: torch.Tensor) -> torch.Tensor:
        """Index of the stored pattern nearest each state (Euclidean; ties: the lowest index):
        ``[B, N] -> [B]`` int64."""
        return torch.cdist(states.to(torch.float64), self.patterns).argmin(-1)


def noisy_probes(patterns: torch.Tensor, per_pattern: int, noise_level: float, noise: str,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_pattern`` noisy copies of every pattern.

    Args:
        patterns: ``[Q, N]`` ±1 patterns.
        per_pattern: copies of each pattern.
        noise_level: ``gaussian``: the standard deviation of additive N(0, noise_level^2) noise (the
            spec's reading of the report's ``noise_level``); ``flip``: the probability that a
            component's sign is flipped.
        noise: ``gaussian`` or ``flip``.
        generator: CPU torch RNG.

    Returns:
        ``(probes [Q * per_pattern, N] float64, source [Q * per_pattern] int64)``, pattern-major.

    Raises:
        ValueError: an unknown ``noise``.
    """
    q, n = patterns.shape
    source = torch.arange(q).repeat_interleave(per_pattern)
    clean = patterns.to(torch.float64)[source]
    if noise == "gaussian":
        return clean + noise_level * torch.randn(clean.shape, generator=generator, dtype=torch.float64), source
    if noise == "flip":
        flips = torch.rand(clean.shape, generator=generator, dtype=torch.float64) < noise_level
        return torch.where(flips, -clean, clean), source
    raise ValueError(f"noise must be gaussian or flip, not {noise!r}")


def random_starts(count: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``[count, n]`` starts drawn uniformly from ``[-1, 1]^n`` (the report's random inputs)."""
    return 2.0 * torch.rand(count, n, generator=generator, dtype=torch.float64) - 1.0


def symmetric_starts(n: int) -> torch.Tensor:
    """Every point of ``{-1, 0, 1}^n`` (``3^n`` points: corners, edge and face centres, the origin):
    the report's high-symmetry inputs.

    Raises:
        ValueError: ``n > 10`` (more than 59,049 points).
    """
    if n > 10:
        raise ValueError(f"symmetric starts enumerate 3^N points; N = {n} is too many (at most 10)")
    return torch.tensor(list(itertools.product((-1.0, 0.0, 1.0), repeat=n)), dtype=torch.float64)


def attractor_kind(state: torch.Tensor, net: HopfieldNetwork) -> str:
    """``target`` (a stored pattern), ``spurious corner`` (another ±1 vertex) or ``spurious
    non-corner`` (a fixed point with some component strictly inside (-1, 1)) of one final ``[N]`` state."""
    if int(net.match(state[None])[0]) >= 0:
        return "target"
    return "spurious corner" if bool(((state.abs() - 1).abs() <= MATCH_TOL).all()) else "spurious non-corner"


def attractor_table(net: HopfieldNetwork, starts: torch.Tensor, max_steps: int = 50,
                    tol: float = 1e-10) -> list[dict]:
    """Every distinct final state reached from ``starts``, the report's Q1/Q2 attractor study.

    Args:
        net: the network. starts: ``[B, N]`` initial states. max_steps, tol: as :meth:`HopfieldNetwork.run`.

    Returns:
        One dict per distinct final state (within :data:`MATCH_TOL`), most frequent first:
        ``state`` (list of N floats, rounded to 6 decimals), ``kind`` (:func:`attractor_kind`, or
        ``not converged``), ``count`` (starts ending there), ``mean_steps`` (their mean updates).
    """
    out = net.run(starts, max_steps, tol)
    rows: list[dict] = []
    keys: list[torch.Tensor] = []
    for i in range(len(starts)):
        s = out.final[i]
        hit = next((j for j, k in enumerate(keys) if float((k - s).abs().max()) <= MATCH_TOL), None)
        if hit is None:
            kind = attractor_kind(s, net) if bool(out.converged[i]) else "not converged"
            keys.append(s)
            rows.append({"state": [round(float(v), 6) + 0.0 for v in s], "kind": kind, "count": 0, "steps": []})
            hit = len(rows) - 1
        rows[hit]["count"] += 1
        rows[hit]["steps"].append(int(out.steps[i]))
    for r in rows:
        r["mean_steps"] = sum(r.pop("steps")) / r["count"]
    return sorted(rows, key=lambda r: -r["count"])
