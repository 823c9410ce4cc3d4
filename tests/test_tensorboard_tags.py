"""TensorBoard output of a sweep, read back with TensorBoard's own readers: tags grouped by
split, none of Ray's bookkeeping keys, one run per trial named by its varied values (images and
scalars in it), and an HPARAMS table whose every metric column has values."""
from __future__ import annotations

from pathlib import Path

import pytest

from sweeplab import load_sweep
from sweeplab.metrics.convention import LOOP_METRICS, Metric
from sweeplab.runner import run_sweep
from sweeplab.spec import validate_spec
from sweeplab.tensorboard import (MAX_VALUES_CHARS, TrialTensorBoard, run_name, run_name_keys, scalar_tag, short_value,
                                  varied_keys)

JOB = {
    "name": "tb",
    "trainable": "autoencoder",
    "data": {"name": "digits", "val_fraction": 0.2},
    "train": {"epochs": 2, "encoding_dim": 4, "hidden_dims": [8], "batch_size": 64, "threads": 1},
    "search": {"sampler": "random", "seed": 0, "num_samples": 3, "max_concurrent": 2, "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        "activation": {"type": "categorical", "values": ["relu", "tanh"]}}},
    "metric": "val_recon_mse",
    "scheduler": {"type": "none"},
    "logging": {"media_every": 1},
    "checkpoint": {"every": 1, "keep": 1},
}
#: keys Ray Tune adds to every result (the default TensorBoard logger wrote them all)
RAY_KEYS = ("done", "iterations_since_restore", "should_checkpoint", "node_ip", "pid", "hostname",
            "time_this_iter_s", "time_total_s", "timestamp", "date", "time_since_restore", "training_iteration",
            "trial_id", "checkpoint_dir_name", "experiment_tag")
EXPECTED_TAGS = {"train/loss", "train/recon_mse", "val/recon_mse", "test/recon_mse", "run/current_lr",
                 "run/num_params", "run/diverged", "time/iteration_seconds", "time/train_seconds"}


def test_one_documented_mapping_from_metric_names_to_tags():
    assert scalar_tag(Metric("val_accuracy", "max", "fraction", "")) == "val/accuracy"
    assert scalar_tag(Metric("test_nmi", "max", "ratio", "")) == "test/nmi"
    assert scalar_tag(Metric("train_recon_mse", "min", "squared target units", "")) == "train/recon_mse"
    assert scalar_tag(Metric("num_params", "min", "count", "")) == "run/num_params"
    assert scalar_tag(Metric("current_lr", None, "learning rate", "")) == "run/current_lr"
    # the loop's timing goes under time/, its divergence flag under run/
    assert {m.name: scalar_tag(m) for m in LOOP_METRICS} == {
        "iteration_seconds": "time/iteration_seconds", "train_seconds": "time/train_seconds",
        "diverged": "run/diverged"}


def test_run_names_are_short_and_filesystem_safe():
    assert short_value(0.003) == "3e-3" and short_value(2.5e-4) == "2.5e-4" and short_value(1.5e5) == "1.5e+5"
    assert short_value(0.0232519) == "0.0233" and short_value(8) == "8" and short_value("batch") == "batch"
    assert run_name("ab12c_00003", {"lr": 0.003, "norm": "batch", "epochs": 8}, ["lr", "norm"]) == \
        "trial_ab12c_00003 lr=3e-3,norm=batch"
    # a sampled configuration's repeat runs on seed + Ray's __trial_index__, as the loop does
    assert run_name("x", {"seed": 4, "__trial_index__": 2}, ["seed"]) == "trial_x seed=6"
    odd = run_name("x", {"path": "a/b:c*d", "long": "v" * 500}, ["path", "long", "missing"])
    assert odd.startswith("trial_x path=a-b-c-d,long=v") and "/" not in odd and ":" not in odd
    assert len(odd) == len("trial_x ") + MAX_VALUES_CHARS
    assert run_name("x", {}, ["lr"]) == "trial_x"


def test_varied_keys_cover_variants_and_repeats():
    spec = validate_spec({**JOB, "repeats": 2})
    assert varied_keys(spec) == ["lr", "activation", "seed"]
    grid = validate_spec({**JOB, "search": {"sampler": "grid", "space": {"lr": {"type": "categorical",
                                                                              "values": [0.01, 0.1]}},
                                            "variants": [{"name": "small", "encoding_dim": 2},
                                                         {"name": "big", "encoding_dim": 8}]}})
    assert varied_keys(grid) == ["variant", "lr", "encoding_dim"]
    assert run_name_keys(grid) == ["variant", "lr"]  # the variant's name stands for its encoding_dim


@pytest.fixture(scope="module")
def tb_sweep(ray_session, tmp_path_factory):
    path, _ = run_sweep(validate_spec(dict(JOB)), storage_path=str(tmp_path_factory.mktemp("tb")), verbose=0)
    return load_sweep(path)


def _accumulator(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_scalars_are_grouped_by_split_without_ray_bookkeeping(tb_sweep):
    df = tb_sweep.dataframe()
    assert len(df) == 3 and set(df["status"]) == {"completed"}
    for _, row in df.iterrows():
        acc = _accumulator(Path(row["path"]))
        tags = set(acc.Tags()["scalars"])
        assert tags == EXPECTED_TAGS, tags
        assert not any(t.startswith("ray/") or t.split("/")[-1] in RAY_KEYS for t in tags)
        for tag in EXPECTED_TAGS:
            curve = acc.Scalars(tag)
            assert [e.step for e in curve] == [1, 2], tag  # one point per iteration, at its number
        assert acc.Scalars("val/recon_mse")[-1].value == pytest.approx(row["val_recon_mse"], rel=1e-5)
        assert acc.Scalars("run/num_params")[-1].value == row["num_params"]
        # the trial's image grids are in the same run as its scalars
        assert acc.Tags()["images"] == ["reconstructions"] and len(acc.Images("reconstructions")) == 2


def test_one_run_per_trial_named_by_its_varied_values(tb_sweep):
    exp = Path(tb_sweep.path)
    runs = {p.parent for p in exp.rglob("events.out.tfevents.*")}
    df = tb_sweep.dataframe()
    assert runs == {Path(p) for p in df["path"]}  # no run elsewhere (Ray's staging, a root run)
    for _, row in df.iterrows():
        folder = Path(row["path"]).name
        assert folder == f"trial_{row['trial_id']} lr={short_value(row['lr'])},activation={row['activation']}"
    # what TensorBoard's run filter sees: the relative folder names
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(exp))
    assert set(mux.Runs()) == {Path(p).name for p in df["path"]}
    assert sum("activation=tanh" in r for r in mux.Runs()) == (df["activation"] == "tanh").sum()


def test_hparams_table_has_every_metric_column_filled(tb_sweep):
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    logdir = str(tb_sweep.path)
    mux = EventMultiplexer().AddRunsFromDirectory(logdir)
    mux.Reload()
    tb = base_plugin.TBContext(logdir=logdir, multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, logdir))
    ctx, backend = context.RequestContext(), backend_context.Context(tb)
    experiment = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert metric_tags == EXPECTED_TAGS  # no training_iteration column that no run can fill
    assert {h.name for h in experiment.hparam_infos} == {"lr", "activation", "seed"}
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    groups = list_session_groups.Handler(ctx, backend, "", request).run().session_groups
    df = tb_sweep.dataframe().set_index("trial_id")
    assert len(groups) == len(df)
    for group in groups:
        trial_id = group.name.split(" ")[0].removeprefix("trial_")
        values = {v.name.tag: v.value for v in group.metric_values}
        assert set(values) == EXPECTED_TAGS, group.name
        assert values["val/recon_mse"] == pytest.approx(df.loc[trial_id, "val_recon_mse"], rel=1e-5)
        assert group.hparams["lr"].number_value == pytest.approx(df.loc[trial_id, "lr"])
        assert [s.status for s in group.sessions] == [api_pb2.STATUS_SUCCESS]


def test_an_errored_trial_ends_its_session_as_failed(tmp_path):
    class Trial:  # the three attributes the logger reads of a Ray Trial
        trial_id, config = "e1", {"lr": 0.01}
        local_path = str(tmp_path / "run")

        def init_local_path(self):
            Path(self.local_path).mkdir(exist_ok=True)

    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    cb = TrialTensorBoard([Metric("val_loss", "min", "nats", "")], ["lr"])
    trial = Trial()
    cb.log_trial_result(1, trial, {"training_iteration": 1, "val_loss": 0.5, "done": False, "pid": 7, "seed": 3})
    cb.log_trial_end(trial, failed=True)
    acc = _accumulator(tmp_path / "run")
    assert acc.Tags()["scalars"] == ["val/loss"]
    infos = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in acc.PluginTagToContent("hparams").values()]
    start = next(i.session_start_info for i in infos if i.HasField("session_start_info"))
    end = next(i.session_end_info for i in infos if i.HasField("session_end_info"))
    assert start.group_name == "trial_e1 lr=0.01" and start.hparams["seed"].number_value == 3
    assert end.status == api_pb2.STATUS_FAILURE
