"""``noisy_1d``: the course's "small model for a small dataset", y = f(x) + sigma * eps, drawn from a
``data_seed``.

Source: ``../shared/specs/ann_course.md`` §1 (a). The report names neither its target function,
nor the x-range, nor the number of points; only the mean signal power mean f^2 = 0.0995-0.0999
can be recovered from its SNR table. The target function is therefore a choice
(:data:`TARGET_FUNCTIONS`, scaled by ``amplitude``), and the bundle records mean f^2 and the
SNR in decibels so that runs with a different f can still be compared with the report's
(they compare only when mean f^2 is about 0.1; train MSE / sigma^2 compares for any f).

The noiseless target is recomputable from x alone (:func:`noiseless_targets`), so a family can
report the MSE against the noiseless f (``*_true_mse``) and redraw the noise at another sigma
(``mlp_regression``'s ``noise_std``, a searchable hyperparameter, where the data are read once
per sweep).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from sweeplab.datasets.base import DataBundle, DatasetError, register_dataset

#: Named target functions f(x) (before ``amplitude``), NumPy float64 in and out.
TARGET_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin_x2": lambda x: np.sin(x ** 2),       # the course's earlier MATLAB edition, on 0:0.05:3*pi
    "sin": np.sin,
    "sinc": lambda x: np.sinc(x / np.pi),     # sin(x)/x, 1 at x = 0
    "cubic": lambda x: x ** 3,
}


def noiseless_targets(meta: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The noiseless target ``amplitude * f(x)`` of a ``noisy_1d`` bundle at inputs ``x``.

    Args:
        meta: the bundle's ``meta`` (needs ``target_fn`` and ``amplitude``).
        x: inputs ``[N]`` or ``[N, 1]``.

    Returns:
        ``float64 [N]``.

    Raises:
        KeyError: ``meta`` is not a ``noisy_1d`` bundle's.
    """
    f = TARGET_FUNCTIONS[meta["target_fn"]]
    return float(meta["amplitude"]) * f(np.asarray(x, dtype=np.float64).reshape(-1))


def _check(name: str, value: Any, *, positive: bool = True, whole: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0) and (not whole or int(value) == value)
    if not ok:
        what = "a whole number above 0" if whole else ("a number above 0" if positive else "a number >= 0")
        raise DatasetError(f"data.options.{name}={value!r} for 'noisy_1d' must be {what}")


def _check_options(*, target_fn: Any, x_sampling: Any, n_train: Any, n_val: Any, n_test: Any,
                   noise_std: Any, amplitude: Any, x_low: Any, x_high: Any) -> None:
    """Refuse an option of :func:`noisy_1d` that makes no sense, with a :class:`DatasetError`
    naming it."""
    if target_fn not in TARGET_FUNCTIONS:
        raise DatasetError(f"data.options.target_fn={target_fn!r} for 'noisy_1d' must be one of "
                           f"{', '.join(TARGET_FUNCTIONS)}")
    if x_sampling not in ("grid", "uniform"):
        raise DatasetError(f"data.options.x_sampling={x_sampling!r} for 'noisy_1d' must be grid or uniform")
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check(name, value, whole=True)
    _check("noise_std", noise_std, positive=False)
    _check("amplitude", amplitude)
    for name, value in (("x_low", x_low), ("x_high", x_high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DatasetError(f"data.options.{name}={value!r} for 'noisy_1d' must be a finite number")
    if not x_low < x_high:
        raise DatasetError(f"data.options.x_low={x_low} must be below x_high={x_high} for 'noisy_1d'")


@register_dataset("noisy_1d", needs_root=False, seeded=True)
def noisy_1d(root: Path | None = None, download: bool = False, *, data_seed: int = 0,
             target_fn: str = "sin", x_low: float = 0.0, x_high: float = 2 * math.pi,
             n_train: int = 100, n_val: int = 1000, n_test: int = 1000, noise_std: float = 0.1,
             amplitude: float = 1.0, x_sampling: Literal["grid", "uniform"] = "grid") -> DataBundle:
    """A 1-D noisy regression problem ``y = amplitude * f(x) + noise_std * eps``, eps ~ N(0, 1).

    Train inputs lie on an even grid over ``[x_low, x_high]`` (``x_sampling: grid``, the default;
    the MATLAB edition's grid is ``sin_x2`` on 0:0.05:3*pi, 189 points) or are drawn uniformly;
    validation and test
    inputs are drawn uniformly over the same range, each split with its own noise (a fresh noisy
    draw, as the spec proposes for ``val_mse``). ``data_seed`` fixes every draw.

    Args:
        root, download: ignored (nothing is read).
        data_seed: seed of the inputs and the noise.
        target_fn: a name of :data:`TARGET_FUNCTIONS`.
        x_low, x_high: the input range.
        n_train, n_val, n_test: points per split.
        noise_std: sigma, the noise's standard deviation.
        amplitude: multiplies f (``sin`` on [0, 2 pi] has mean f^2 = 0.495 on the 100-point
            grid, amplitude 0.4492 brings it to the report's 0.0999; ``sin_x2`` on [0, 3 pi] has
            0.474 on its 189-point grid, amplitude 0.4588).
        x_sampling: ``grid`` or ``uniform`` for the training inputs.

    Returns:
        A ``regression`` bundle: ``x`` ``float32 [N, 1]``, ``y`` ``float32 [N]``, a validation
        split; ``meta`` holds ``target_fn``, ``amplitude``, ``noise_std``, ``x_low``, ``x_high``,
        ``mean_f2`` (mean of f^2 over the training inputs) and ``snr_db`` =
        10 log10(mean_f2 / noise_std^2).

    Raises:
        DatasetError: an unknown function or sampling, a count or range that makes no sense.
    """
    _check_options(target_fn=target_fn, x_sampling=x_sampling, n_train=n_train, n_val=n_val, n_test=n_test,
                   noise_std=noise_std, amplitude=amplitude, x_low=x_low, x_high=x_high)
    rng = np.random.default_rng(data_seed)
    meta: dict[str, Any] = {"target_fn": target_fn, "amplitude": float(amplitude)}
    if x_sampling == "grid":
        x_train = np.linspace(x_low, x_high, int(n_train))
    else:
        x_train = rng.uniform(x_low, x_high, int(n_train))
    x_val, x_test = rng.uniform(x_low, x_high, int(n_val)), rng.uniform(x_low, x_high, int(n_test))

    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x32 = x.astype(np.float32)
        y = noiseless_targets(meta, x32) + noise_std * rng.standard_normal(len(x))
        return x32[:, None], y.astype(np.float32)

    (xtr, ytr), (xva, yva), (xte, yte) = split(x_train), split(x_val), split(x_test)
    mean_f2 = float(np.mean(noiseless_targets(meta, xtr) ** 2))
    meta.update(noise_std=float(noise_std), x_low=float(x_low), x_high=float(x_high), mean_f2=mean_f2,
                snr_db=10 * math.log10(mean_f2 / noise_std ** 2) if noise_std > 0 else math.inf,
                x_sampling=x_sampling, data_seed=data_seed, source="../shared/specs/ann_course.md §1 (a)")
    return DataBundle(name="noisy_1d", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte,
                      x_val=xva, y_val=yva, meta=meta, task="regression")
