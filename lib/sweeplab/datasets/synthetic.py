"""Synthetic datasets drawn from a ``data_seed``: the same samples for every trial and repeat.

``gmm3d``: the 3-D mixture of 10 spherical Gaussians of the GMM-VAE report, with the generator
the spec proposes where the report is silent (``../shared/specs/gmm_vae.md`` §1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from sweeplab.datasets.base import DataBundle, DatasetError, register_dataset


def _check_positive(name: str, value: float, kind: type = int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
            or (kind is int and int(value) != value):
        what = "a whole number" if kind is int else "a number"
        raise DatasetError(f"data.options.{name}={value!r} for 'gmm3d' must be {what} above 0")


@register_dataset("gmm3d", needs_root=False, seeded=True)
def gmm3d(root: Path | None = None, download: bool = False, *, data_seed: int = 0,
          n_components: int = 10, dim: int = 3, n_train: int = 1000, n_test: int = 1000,
          mean_half_width: float = 5.0, weights: Literal["random", "equal"] = "random") -> DataBundle:
    """A mixture of spherical unit-variance Gaussians (``gmm3d``).

    Source: ``../shared/specs/gmm_vae.md`` §1 (the report fixes D = 3, K = 10, N = 1,000,
    identity covariances and weights summing to 1; the rest is the spec's proposal)::

        mu_k ~ Uniform([-a, a]^D)            a = mean_half_width
        w = u / sum(u), u_k ~ Uniform(0, 1)  (weights: random)   or   w_k = 1/K (equal)
        c_i ~ Categorical(w),  x_i = mu_{c_i} + eps_i,  eps_i ~ N(0, I_D)

    ``data_seed`` draws the means, the weights and both splits; the test split is a second,
    independent draw of ``n_test`` points (the report has none).

    Args:
        root, download: ignored (nothing is read).
        data_seed: seed of the means, weights and samples (``data.data_seed`` in a job).
        n_components: K. dim: D. n_train, n_test: points per split.
        mean_half_width: a, half the side of the cube the means are drawn in.
        weights: ``random`` (default) or ``equal``.

    Returns:
        A ``classification`` bundle: ``x`` ``float32 [N, D]``, ``y`` ``int64 [N]`` the component
        of each point (for evaluation; generative families ignore it), ``num_classes = K``;
        ``meta`` holds ``means`` ``[K, D]``, ``weights`` ``[K]`` and ``sigma = 1.0``.

    Raises:
        DatasetError: a count or width that is not positive, or an unknown ``weights``.
    """
    for name, value in (("n_components", n_components), ("dim", dim), ("n_train", n_train), ("n_test", n_test)):
        _check_positive(name, value)
    _check_positive("mean_half_width", mean_half_width, float)
    if weights not in ("random", "equal"):
        raise DatasetError(f"data.options.weights={weights!r} for 'gmm3d' must be random or equal")
    rng = np.random.default_rng(data_seed)
    means = rng.uniform(-mean_half_width, mean_half_width, size=(n_components, dim))
    if weights == "random":
        u = rng.uniform(0.0, 1.0, size=n_components)
        w = u / u.sum()
    else:
        w = np.full(n_components, 1.0 / n_components)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        c = rng.choice(n_components, size=n, p=w)
        return (means[c] + rng.standard_normal((n, dim))).astype(np.float32), c.astype(np.int64)

    x_train, y_train = draw(int(n_train))
    x_test, y_test = draw(int(n_test))
    return DataBundle(
        name="gmm3d", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        num_classes=int(n_components), class_names=[f"component {k}" for k in range(n_components)],
        meta={"means": means.astype(np.float32), "weights": w, "sigma": 1.0, "data_seed": data_seed,
              "mean_half_width": mean_half_width, "weight_kind": weights, "source": "../shared/specs/gmm_vae.md"})
