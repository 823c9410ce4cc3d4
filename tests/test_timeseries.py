"""``timeseries``: the recursive forecast on a series with a known answer, time-ordered folds with
a gap, the competition's NMSE, early stopping on cross-validation, the LSTM, the Santa Fe reader
and the forecast image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import TimeSeriesSplit

from sweeplab.datasets.base import DataBundle, DatasetError, load_dataset
from sweeplab.families.timeseries import TimeSeriesConfig, TimeSeriesForecaster, cv_folds, history_of
from sweeplab.models.sequence import LSTMForecaster, recursive_forecast

CPU = torch.device("cpu")
OMEGA = 2 * math.pi / 17


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def sine_bundle(n_train: int = 300, n_test: int = 100, noise: float = 0.0, amplitude: float = 40.0,
                offset: float = 60.0) -> DataBundle:
    t = np.arange(n_train + n_test)
    s = offset + amplitude * np.sin(OMEGA * t) + noise * np.random.default_rng(0).standard_normal(len(t))
    s = s.astype(np.float32)[:, None]
    return DataBundle("sine", s[:n_train], None, s[n_train:], None, task="series")


def family(data: DataBundle, **cfg) -> TimeSeriesForecaster:
    torch.manual_seed(cfg.get("seed", 0))
    return TimeSeriesForecaster(TimeSeriesConfig(**cfg), data, CPU)


def run(fam: TimeSeriesForecaster) -> list[dict]:
    return [{**fam.train_iteration(i), **fam.evaluate(i)} for i in range(fam.num_iterations)]


def test_recursive_forecast_of_a_sinusoid_by_its_exact_linear_recurrence():
    # s_t = 2 cos(w) s_{t-1} - s_{t-2} holds exactly for any pure sinusoid
    t = torch.arange(250, dtype=torch.float64)
    s = torch.sin(OMEGA * t + 0.3)
    predict = (lambda w: 2 * math.cos(OMEGA) * w[:, -1] - w[:, -2])
    out = recursive_forecast(predict, s[:150], 100, lag=2)
    assert torch.allclose(out, s[150:], atol=1e-9)
    origins = torch.stack([s[100:140], s[110:150]])  # two origins at once, one row each
    batched = recursive_forecast(predict, origins, 100, lag=2)
    assert batched.shape == (2, 100) and torch.allclose(batched[1], out) and torch.allclose(batched[0], s[140:240])
    clamped = recursive_forecast(lambda w: w[:, -1] * 2, s[:150], 5, lag=2, clamp=(-1.0, 1.0))
    assert clamped.abs().max() <= 1.0
    with pytest.raises(ValueError, match="at least lag"):
        recursive_forecast(predict, s[:1], 3, lag=2)


def test_a_linear_forecaster_learns_the_sinusoid_and_forecasts_100_steps():
    data = sine_bundle()
    fam = family(data, model="mlp", activation="identity", lag=2, hidden=4, optimizer="lbfgs",
                 batch_size=None, epochs=3, folds=3, validation_size=40)
    last = run(fam)[-1]
    assert last["test_nmse"] < 1e-4 and last["cv_mse"] < 1e-5 and last["cv_forecast_mse"] < 1e-4
    forecast = fam.forecast().numpy()
    truth = data.x_test[:, 0].astype(np.float64)
    assert last["test_mse"] == pytest.approx(mean_squared_error(truth, forecast), rel=1e-5)
    assert last["test_rmse"] == pytest.approx(math.sqrt(last["test_mse"]))
    assert last["test_nmse"] == pytest.approx(last["test_mse"] / truth.var())
    # cv_forecast_mse by hand: 30-step forecasts (len(test)) from origins 0 and 20 of each 60-window fold
    cv_fam = family(sine_bundle(n_test=30), model="mlp", activation="identity", lag=3, hidden=4, epochs=1,
                    folds=2, validation_size=60, cv_origin_every=20)
    cv_fam.train_iteration(0)
    by_hand = []
    for model, idx in zip(cv_fam.models[:-1], cv_fam.val_idx):
        for o in (0, 20):
            start = int(idx[0]) + 3 + o
            pred = recursive_forecast(model.eval(), cv_fam.history[:start], 30, 3, cv_fam._clamp)
            by_hand.append(float((pred - cv_fam.history[start:start + 30]).square().mean()))
    assert cv_fam.evaluate(0)["cv_forecast_mse"] == pytest.approx(np.mean(by_hand), rel=1e-5)


def test_folds_are_time_ordered_with_a_gap_of_lag_windows():
    cfg = TimeSeriesConfig(lag=7, folds=4, validation_size=30)
    folds = cv_folds(200, cfg)
    reference = list(TimeSeriesSplit(n_splits=4, test_size=30, gap=7).split(np.arange(200)))
    assert all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(folds, reference))
    for train, val in folds:
        last_target_time = train.max() + cfg.lag  # window i: inputs i..i+lag-1, target i+lag
        assert val.min() > last_target_time  # no validation input is a training target
    with pytest.raises(ValueError, match="folds \\* validation_size \\+ gap"):
        cv_folds(100, TimeSeriesConfig(lag=10, folds=4, validation_size=25))


def test_early_stopping_keeps_the_epoch_of_lowest_cv_and_stops():
    data = sine_bundle(noise=8.0)
    base = dict(model="mlp", lag=6, hidden=16, lr=0.03, epochs=30, folds=2, validation_size=40, seed=2)
    free = run(family(data, **base))
    cv = [r["cv_mse"] for r in free]
    stopped = run(family(data, **base, early_stopping_patience=3))
    best, since = 0, 0
    for i in range(1, len(cv)):  # where a patience of 3 stops
        if cv[i] < cv[best]:
            best, since = i, 0
        else:
            since += 1
        if since >= 3:
            break
    assert stopped[-1]["best_epoch"] == best + 1
    assert stopped[-1]["cv_mse"] == pytest.approx(cv[best])
    assert stopped[-1]["test_mse"] == pytest.approx(free[best]["test_mse"])
    assert stopped[-1]["train_loss"] == stopped[i]["train_loss"]  # no training after the stop


def test_the_lstm_learns_a_noisy_sinusoid():
    model = LSTMForecaster(hidden=5, layers=2, dropout=0.1)
    assert model(torch.zeros(3, 9)).shape == (3,)
    data = sine_bundle(n_train=200, noise=2.0)
    results = run(family(data, model="lstm", lag=8, hidden=12, lr=0.02, epochs=12, folds=2, validation_size=30))
    assert results[-1]["cv_mse"] < 0.25 * results[0]["cv_mse"] and results[-1]["test_nmse"] < 0.5


def test_santafe_reader_and_errors(tmp_path):
    folder = tmp_path / "santafe"
    folder.mkdir()
    np.savetxt(folder / "lasertrain.dat", np.arange(30.0))
    np.savetxt(folder / "laserpred.dat", np.arange(30.0, 35.0))
    data = load_dataset("santafe", tmp_path)
    assert data.task == "series" and data.x_train.shape == (30, 1) and data.x_test[0, 0] == 30.0
    carved = data.split_validation(0.2)
    assert np.array_equal(history_of(carved), np.arange(30.0))  # the validation split is put back
    (folder / "laserpred.dat").write_text("1\nnot-a-number\n")
    with pytest.raises(DatasetError, match="laserpred.dat"):
        load_dataset("santafe", tmp_path)
    (folder / "laserpred.dat").unlink()
    with pytest.raises(DatasetError, match="laserpred.dat not found"):
        load_dataset("santafe", tmp_path)


def test_data_checks_and_forecast_image():
    data = sine_bundle(n_train=120, n_test=20)
    with pytest.raises(ValueError, match="lower folds"):
        TimeSeriesForecaster.check_data(data, TimeSeriesConfig(lag=10, folds=4, validation_size=30))
    two_d = DataBundle("2d", np.zeros((50, 2), np.float32), None, np.zeros((5, 2), np.float32), None, task="series")
    with pytest.raises(ValueError, match="scalar series"):
        TimeSeriesForecaster.check_data(two_d, TimeSeriesConfig(lag=2, folds=2, validation_size=5))
    fam = family(data, lag=4, hidden=4, epochs=1, folds=2, validation_size=20)
    run(fam)
    image = fam.media(0)["forecast"]
    assert image.ndim == 3 and image.shape[0] == 3 and 0 <= float(image.min()) and float(image.max()) <= 1
