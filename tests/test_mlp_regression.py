"""``mlp_regression`` and its data: the noisy 1-D generator, the personal regression file, MSEs on
the raw scale against scikit-learn, LBFGS reaching least squares, the best epoch, the noise
redraw, warm starts and seconds to the best epoch."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_squared_error

from sweeplab.datasets.base import DataBundle, DatasetError, load_dataset
from sweeplab.datasets.kul_regression import parse_digits
from sweeplab.datasets.regression_synthetic import noiseless_targets
from sweeplab.families.mlp_regression import MLPRegression, MLPRegressionConfig, seconds_to_best
from sweeplab.kit.optim import OptimizerConfig, build_optimizer

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def family(data: DataBundle, **cfg) -> MLPRegression:
    torch.manual_seed(cfg.get("seed", 0))
    return MLPRegression(MLPRegressionConfig(**cfg), data, CPU)


def run(fam: MLPRegression) -> list[dict]:
    return [{**fam.train_iteration(i), **fam.evaluate(i)} for i in range(fam.num_iterations)]


def linear_bundle(n: int = 60, noise: float = 0.3, seed: int = 0) -> DataBundle:
    rng = np.random.default_rng(seed)

    def split(m):
        x = rng.uniform(-2, 3, (m, 2)).astype(np.float32)
        return x, (5.0 + 3.0 * x[:, 0] - 2.0 * x[:, 1] + noise * rng.standard_normal(m)).astype(np.float32)

    (xtr, ytr), (xva, yva), (xte, yte) = split(n), split(n), split(n)
    return DataBundle("lin", xtr, ytr, xte, yte, x_val=xva, y_val=yva)


# -- data -------------------------------------------------------------------------------------
def test_noisy_1d_is_fixed_by_its_seed_and_draws_the_stated_noise():
    a = load_dataset("noisy_1d", options={"n_train": 4000, "noise_std": 0.5}, data_seed=3)
    b = load_dataset("noisy_1d", options={"n_train": 4000, "noise_std": 0.5}, data_seed=3)
    c = load_dataset("noisy_1d", options={"n_train": 4000, "noise_std": 0.5}, data_seed=4)
    assert np.array_equal(a.y_train, b.y_train) and not np.array_equal(a.y_val, c.y_val)
    x = a.x_train[:, 0].astype(np.float64)
    assert np.allclose(x, np.linspace(0, 2 * math.pi, 4000), atol=1e-6)  # the grid
    resid = a.y_train - noiseless_targets(a.meta, a.x_train)
    assert abs(resid.std() - 0.5) < 0.02 and abs(resid.mean()) < 0.03
    assert a.meta["mean_f2"] == pytest.approx(np.mean(np.sin(x) ** 2))
    assert a.meta["snr_db"] == pytest.approx(10 * math.log10(a.meta["mean_f2"] / 0.25))
    assert a.x_val.shape == (1000, 1) and a.task == "regression"


@pytest.mark.parametrize("options, fragment", [
    ({"target_fn": "exp"}, "target_fn"), ({"n_train": 0}, "n_train"), ({"x_low": 3, "x_high": 1}, "x_low"),
    ({"noise_std": -1}, "noise_std"), ({"x_sampling": "random"}, "x_sampling"),
])
def test_noisy_1d_refuses_bad_options_by_name(options, fragment):
    with pytest.raises(DatasetError, match=fragment):
        load_dataset("noisy_1d", options=options)


def write_kul_mat(root, n: int = 50, seed: int = 0) -> dict:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    arrays = {k: rng.uniform(0, 5, (n, 1)) for k in ("X1", "X2", "T1", "T2", "T3", "T4", "T5")}
    (root / "kul_regression").mkdir(parents=True)
    savemat(root / "kul_regression" / "Data_Problem1_regression.mat", arrays)
    return arrays


def test_kul_regression_builds_t_new_from_the_sorted_digits(tmp_path):
    arrays = write_kul_mat(tmp_path)
    data = load_dataset("kul_regression", tmp_path,
                        options={"digits": "57913", "n_train": 20, "n_val": 10, "n_test": 15})
    d = np.array([9, 7, 5, 3, 1], float)
    t_new = sum(d[i] * arrays[f"T{i + 1}"][:, 0] for i in range(5)) / d.sum()
    x_all = np.stack([arrays["X1"][:, 0], arrays["X2"][:, 0]], 1).astype(np.float32)
    rows = [np.flatnonzero((x_all == row).all(1))[0] for row in
            np.concatenate([data.x_train, data.x_val, data.x_test])]
    assert len(set(rows)) == 45  # three disjoint draws
    assert np.allclose(np.concatenate([data.y_train, data.y_val, data.y_test]), t_new[rows], rtol=1e-6)
    assert data.meta["digits"] == [9, 7, 5, 3, 1]


def test_kul_regression_errors_name_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="Data_Problem1_regression.mat not found"):
        load_dataset("kul_regression", tmp_path, options={"digits": "98765"})
    write_kul_mat(tmp_path)
    with pytest.raises(DatasetError, match="digits"):
        load_dataset("kul_regression", tmp_path)
    with pytest.raises(DatasetError, match="summing to at most"):
        load_dataset("kul_regression", tmp_path, options={"digits": "98765", "n_train": 40, "n_val": 40})
    assert parse_digits([1, 9, 2, 8, 3]) == [9, 8, 3, 2, 1]
    for bad in ("1234", "12a45", [1, 2, 3, 4, 10], "00000", True):
        with pytest.raises(DatasetError):
            parse_digits(bad)


# -- family -----------------------------------------------------------------------------------
def test_lbfgs_linear_net_reaches_least_squares_and_mses_are_on_the_raw_scale():
    data = linear_bundle()
    fam = family(data, layers=0, optimizer="lbfgs", epochs=30, epochs_per_iteration=10)
    last = run(fam)[-1]
    ols = LinearRegression().fit(data.x_train, data.y_train)
    for split, x, y in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val),
                        ("test", data.x_test, data.y_test)):
        assert last[f"{split}_mse"] == pytest.approx(mean_squared_error(y, ols.predict(x)), rel=1e-4)
    assert math.isnan(last["test_true_mse"]) and math.isnan(fam.extra_results()["snr_db"])
    assert fam.optimizer.defaults["max_iter"] == 20
    assert build_optimizer(fam.model.parameters(), OptimizerConfig(optimizer="lbfgs"),
                           lbfgs_max_iter=1).defaults["max_iter"] == 1


def test_best_epoch_is_the_argmin_of_the_per_epoch_validation_mse():
    data = linear_bundle(n=30, noise=1.0)
    per_epoch = run(family(data, hidden=32, optimizer="adam", lr=0.05, epochs=40, epochs_per_iteration=1))
    val = [r["val_mse"] for r in per_epoch]
    chunked = run(family(data, hidden=32, optimizer="adam", lr=0.05, epochs=40, epochs_per_iteration=8))
    assert chunked[-1]["best_epoch"] == int(np.argmin(val)) + 1 == per_epoch[-1]["best_epoch"]
    assert chunked[-1]["grad_evals"] == 40 and chunked[-1]["grad_evals_to_best"] == chunked[-1]["best_epoch"]
    assert chunked[-1]["val_mse"] == pytest.approx(val[-1], rel=1e-6)  # chunking changes nothing else


def test_noise_std_redraws_the_noise_from_the_seed_with_shared_draws_across_sigma():
    data = load_dataset("noisy_1d", options={"n_train": 500}, data_seed=0)
    f = noiseless_targets(data.meta, data.x_train)

    def residual(sigma, seed):
        fam = family(data, noise_std=sigma, seed=seed, epochs=1)
        return (fam._y["train"][:, 0].numpy() * fam.y_std[0] + fam.y_mean[0]) - f

    r1, r2, r_other = residual(0.2, 0), residual(1.0, 0), residual(0.2, 1)
    assert np.allclose(r2, 5 * r1, atol=1e-4)  # the same draws at one seed
    assert abs(np.corrcoef(r1, r_other)[0, 1]) < 0.2 and abs(r1.std() - 0.2) < 0.03
    fam = family(data, noise_std=2.0, epochs=1)
    assert fam.extra_results()["snr_db"] == pytest.approx(10 * math.log10(data.meta["mean_f2"] / 4))
    with pytest.raises(ValueError, match="noise_std"):
        MLPRegression.check_data(linear_bundle(), MLPRegressionConfig(noise_std=0.1))


def test_warm_start_trains_the_same_weights_first():
    data = linear_bundle()
    stage = {"optimizer": "adam", "lr": 0.01, "epochs": 15}
    first = family(data, hidden=8, optimizer="adam", lr=0.01, epochs=15, epochs_per_iteration=15)
    run(first)
    warm = family(data, hidden=8, optimizer="sgd", momentum=0.0, lr=0.01, epochs=1, warm_start=[stage])
    warm._warm_up()
    for a, b in zip(first.model.parameters(), warm.model.parameters()):
        assert torch.equal(a, b)
    fresh = family(data, hidden=8, optimizer="sgd", momentum=0.0, lr=0.01, epochs=1)
    warm = family(data, hidden=8, optimizer="sgd", momentum=0.0, lr=0.01, epochs=1, warm_start=[stage])
    assert run(warm)[0]["train_loss"] < run(fresh)[0]["train_loss"] / 2
    assert warm.grad_evals == 1  # the warm stage's epochs are not the trial's


def test_lbfgs_refuses_mini_batches_by_name():
    with pytest.raises(ValidationError, match="batch_size: null"):
        MLPRegressionConfig(optimizer="lbfgs", batch_size=16)
    with pytest.raises(ValidationError, match="batch_size: null"):
        MLPRegressionConfig(batch_size=16, warm_start=[{"optimizer": "lbfgs", "epochs": 2}])


def test_seconds_to_best_interpolates_the_loops_train_seconds():
    history = pd.DataFrame({"trial_id": ["a"] * 3 + ["b"] * 2, "training_iteration": [1, 2, 3, 1, 2],
                            "grad_evals": [10, 20, 30, 100, 200], "train_seconds": [1.0, 3.0, 4.0, 2.0, 6.0],
                            "grad_evals_to_best": [10, 15, 15, 150, 150]})
    out = seconds_to_best(history)
    assert out["a"] == pytest.approx(2.0) and out["b"] == pytest.approx(4.0)
