"""Analytic test functions of global optimisation with known global minima (no training, no torch).

Source: Dixon, L. C. W. and Szegő, G. P. (1978), "The global optimization problem: an
introduction", in *Towards Global Optimisation 2*, North-Holland, pp. 1-15; formulas, domains,
minimisers and minima as tabulated by Surjanovic, S. and Bingham, D., *Virtual Library of
Simulation Experiments: Test Functions and Datasets* (Simon Fraser University,
https://www.sfu.ca/~ssurjano/branin.html and .../hart6.html).

* **Branin** (Branin-Hoo, 2-D) on ``x1 in [-5, 10], x2 in [0, 15]``::

      f(x) = a (x2 - b x1^2 + c x1 - r)^2 + s (1 - t) cos(x1) + s
      a = 1, b = 5.1 / (4 pi^2), c = 5 / pi, r = 6, s = 10, t = 1 / (8 pi)

  global minimum ``f* = 0.397887`` at ``(-pi, 12.275)``, ``(pi, 2.275)`` and ``(9.42478, 2.475)``.
* **Hartmann-6** (6-D) on ``[0, 1]^6``::

      f(x) = - sum_i alpha_i exp(- sum_j A_ij (x_j - P_ij)^2),   i = 1..4, j = 1..6

  global minimum ``f* = -3.32237`` at ``(0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)``.

The sweeps' *fidelity* (noise that shrinks with budget) is the family's, not the function's:
see :mod:`sweeplab.families.analytic`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

_HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_HARTMANN_A = np.array([[10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
                        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
                        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
                        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0]])
_HARTMANN_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886],
                               [2329, 4135, 8307, 3736, 1004, 9991],
                               [2348, 1451, 3522, 2883, 3047, 6650],
                               [4047, 8828, 8732, 5743, 1091, 381]], dtype=float)


def branin(x: np.ndarray) -> np.ndarray:
    """Branin's function.

    Args:
        x: ``[..., 2]`` points (any float dtype); the domain is ``[-5, 10] x [0, 15]`` but any
            finite point is evaluated.

    Returns:
        ``[...]`` float64 values.
    """
    x = np.asarray(x, dtype=np.float64)
    x1, x2 = x[..., 0], x[..., 1]
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6.0) ** 2 + 10.0 * (1 - t) * np.cos(x1) + 10.0


def hartmann6(x: np.ndarray) -> np.ndarray:
    """The 6-dimensional Hartmann function.

    Args:
        x: ``[..., 6]`` points; the domain is ``[0, 1]^6``.

    Returns:
        ``[...]`` float64 values (negative; the minimum is -3.32237).
    """
    x = np.asarray(x, dtype=np.float64)[..., None, :]  # [..., 1, 6] against P's [4, 6]
    inner = (_HARTMANN_A * (x - _HARTMANN_P) ** 2).sum(-1)  # [..., 4]
    return -(_HARTMANN_ALPHA * np.exp(-inner)).sum(-1)


@dataclasses.dataclass(frozen=True)
class TestFunction:
    """One analytic function with what is known about it.

    Attributes:
        name: the ``function:`` value of a job (``branin``, ``hartmann6``).
        fn: ``[..., dim]`` points -> ``[...]`` values.
        bounds: ``dim`` pairs ``(low, high)``: the search domain of ``x1 .. x<dim>``.
        f_star: the global minimum (Surjanovic & Bingham's table).
        minimisers: every global minimiser, ``[n, dim]``, as tabulated (to 5-6 digits).
        noise_sd: the family's default ``sigma_0``: the noise of one unit of budget, in the
            function's units (2-3 % of its range over the domain).
    """

    __test__ = False  # not a pytest test class, whatever its name

    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    bounds: tuple[tuple[float, float], ...]
    f_star: float
    minimisers: tuple[tuple[float, ...], ...]
    noise_sd: float

    @property
    def dim(self) -> int:
        """Number of coordinates."""
        return len(self.bounds)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``fn(x)``: ``[..., dim]`` -> ``[...]`` float64."""
        return self.fn(x)

    def regret(self, x: np.ndarray) -> np.ndarray:
        """``f(x) - f*`` (>= 0 on the domain up to the rounding of ``f*``): ``[..., dim]`` -> ``[...]``."""
        return self.fn(x) - self.f_star


#: The functions a job can name, by ``function:``.
FUNCTIONS: dict[str, TestFunction] = {
    "branin": TestFunction(
        "branin", branin, ((-5.0, 10.0), (0.0, 15.0)), 0.397887357729738,
        ((-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475)), noise_sd=5.0),
    "hartmann6": TestFunction(
        "hartmann6", hartmann6, ((0.0, 1.0),) * 6, -3.32236801141551,
        ((0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573),), noise_sd=0.1),
}
