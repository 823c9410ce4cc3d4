"""One dataset contract for every kind of data: classification, regression, series, unlabelled,
and generators fixed by ``data.data_seed``; stratified validation splits; forecasting windows."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from sweeplab.datasets.base import DataBundle, DatasetError, dataset_info, load_dataset, windows
from sweeplab.spec import SpecError, validate_spec


def _labels(n, k, rng):
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def test_task_is_inferred_from_the_arrays():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2)).astype(np.float32)
    assert DataBundle("c", x, _labels(10, 2, rng), x, _labels(10, 2, rng), num_classes=2).task == "classification"
    assert DataBundle("r", x, x[:, :1], x, x[:, :1]).task == "regression"
    assert DataBundle("u", x, None, x, None).task == "unlabelled"
    r = DataBundle("r2", x, x, x, x)
    assert r.target_shape == (2,) and r.labelled


@pytest.mark.parametrize("build, message", [
    (lambda x, y: DataBundle("b", x, y.astype(np.float32), x, y, num_classes=2, task="classification"),
     "integer labels"),
    (lambda x, y: DataBundle("b", x, y, x, y), "need num_classes"),
    (lambda x, y: DataBundle("b", x, y[:5], x, y, num_classes=2), "one target per sample"),
    (lambda x, y: DataBundle("b", x, y, x, y, task="series"), "holds inputs only"),
    (lambda x, y: DataBundle("b", x, x.astype(np.int64), x, x.astype(np.int64), task="regression"), "must be float"),
    (lambda x, y: DataBundle("b", x, None, x, None, task="tabular"), "not one of"),
])
def test_arrays_that_do_not_fit_the_task_are_refused_by_name(build, message):
    x = np.zeros((8, 2), np.float32)
    y = np.arange(8, dtype=np.int64) % 2
    with pytest.raises(DatasetError, match=message):
        build(x, y)


def test_validation_split_is_stratified_as_sklearn_splits_it():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), [40, 30, 20, 10]).astype(np.int64)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    b = DataBundle("s", x, y, x[:10], y[:10], num_classes=4).split_validation(0.2, seed=7)
    _, want = train_test_split(np.arange(100), test_size=20, stratify=y, random_state=7)
    assert np.array_equal(b.x_val, x[np.sort(want)])
    assert np.bincount(b.y_val).tolist() == [8, 6, 4, 2]  # every class in proportion
    assert len(b.x_train) == 80 and not set(map(bytes, b.x_train)) & set(map(bytes, b.x_val))


def test_validation_split_without_classes_is_a_permutation_and_a_series_keeps_time_order():
    x = np.arange(20, dtype=np.float32)[:, None]
    reg = DataBundle("r", x, x.copy(), x, x.copy()).split_validation(0.25, seed=0)
    assert sorted(np.concatenate([reg.x_train, reg.x_val]).ravel()) == list(range(20))
    assert np.array_equal(reg.x_val, reg.y_val)  # inputs and targets stay paired
    series = DataBundle("s", x, None, x, None, task="series").split_validation(0.25)
    assert series.x_train.ravel().tolist() == list(range(15)) and series.x_val.ravel().tolist() == [15, 16, 17, 18, 19]
    assert DataBundle("s", x, None, x, None, task="series").subset(0.5).x_train.ravel().tolist() == list(range(10))


def test_windows_are_the_lagged_inputs_and_the_following_values():
    s = np.arange(12, dtype=np.float32)
    x, y = windows(s, lookback=4, horizon=2, stride=3)
    assert x.shape == (3, 4, 1) and y.shape == (3, 2, 1)
    assert x[2].ravel().tolist() == [6, 7, 8, 9] and y[2].ravel().tolist() == [10, 11]
    two = np.stack([s, -s], axis=1)
    x2, y2 = windows(two, lookback=3)
    assert x2.shape == (9, 3, 2) and y2[0].tolist() == [[3, -3]]
    assert np.shares_memory(x2, two)  # views, no copy
    with pytest.raises(DatasetError, match="shorter than lookback"):
        windows(s, lookback=11, horizon=2)


def test_gmm3d_is_fixed_by_its_data_seed_and_matches_the_specs_generator():
    a, b = load_dataset("gmm3d", data_seed=5), load_dataset("gmm3d", data_seed=5)
    c = load_dataset("gmm3d", data_seed=6)
    assert np.array_equal(a.x_train, b.x_train) and not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (1000, 3) and a.x_test.shape == (1000, 3) and a.num_classes == 10
    means, w = a.meta["means"], a.meta["weights"]
    assert np.abs(means).max() <= 5 and np.isclose(w.sum(), 1)
    # each point is its component's mean plus N(0, I): the residuals have unit variance, mean 0
    resid = np.concatenate([a.x_train - means[a.y_train], a.x_test - means[a.y_test]])
    assert np.allclose(resid.mean(0), 0, atol=0.1) and np.allclose(resid.var(0), 1, atol=0.1)
    # and components are drawn by their weights (chi-square on 2,000 draws)
    from scipy.stats import chisquare

    counts = np.bincount(np.concatenate([a.y_train, a.y_test]), minlength=10)
    assert chisquare(counts, 2000 * w).pvalue > 1e-3
    equal = load_dataset("gmm3d", data_seed=5, options={"weights": "equal", "n_train": 50})
    assert np.allclose(equal.meta["weights"], 0.1) and len(equal.x_train) == 50
    assert dataset_info("gmm3d").seeded and not dataset_info("digits").seeded


def test_data_seed_is_for_generators_only():
    job = {"trainable": "cnn_classifier", "metric": "test_accuracy", "data": {"name": "digits", "data_seed": 3}}
    with pytest.raises(SpecError, match="data.data_seed: dataset 'digits' is read from files"):
        validate_spec(job)
    with pytest.raises(DatasetError, match="data_seed"):
        load_dataset("digits", data_seed=3)
    with pytest.raises(DatasetError, match="weights"):
        load_dataset("gmm3d", options={"weights": "zipf"})
