"""The shipped DERP-VAE jobs (tune_jobs/derp_vae_*.yaml) end to end through Ray Tune on tiny data
written in the real formats (CIFAR-10 as the shared JPEG image-folder tree, CelebA's standard
layout): every model
reports every metric of shared/specs/derp_vae.md, seeds are repeated, the runs' table layout
(one row per model, mean ± std over seeds) is printed, and TensorBoard gets image grids."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from datafiles import write_celeba, write_cifar_image_folder
from sweeplab import load_sweep
from sweeplab.cli import main
from sweeplab.runner import run_sweep
from sweeplab.spec import load_spec

JOBS = Path(__file__).resolve().parent.parent / "tune_jobs"
#: every metric the spec asks of every model (the runs reported ks_probe only for DERP)
SPEC_METRICS = ("test_ks_probe", "test_ks_eval", "test_ks_two_sided", "test_kl", "test_accuracy",
                "test_activation_rate", "test_active_units", "test_class_separation", "test_recon_bce",
                "test_elbo", "train_seconds")
TINY = ["train.hidden_dim=32", "train.latent_dim=4", "train.batch_size=8", "train.epochs=2",
        "train.eval_every=1", "repeats=2", "logging.media_every=1", "checkpoint.every=1"]


def media_tags(trial_dir: Path) -> dict[str, int]:
    """Image tags in a trial's TensorBoard media event files, with how many images each has."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, int] = {}
    for events in trial_dir.glob("events.out.tfevents.*.media"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        for tag in acc.Tags()["images"]:
            tags[tag] = tags.get(tag, 0) + len(acc.Images(tag))
    return tags


@pytest.fixture(scope="module")
def cifar_sweep(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_data")
    write_cifar_image_folder(root, n_per_class=6)
    spec = load_spec(JOBS / "derp_vae_cifar10.yaml", TINY + [f"data.root={root}"])
    path, _ = run_sweep(spec, storage_path=str(tmp_path_factory.mktemp("cifar_sweeps")), verbose=0)
    return load_sweep(path)


def test_cifar_job_runs_every_model_with_seeds_and_every_metric(cifar_sweep):
    df = cifar_sweep.dataframe()
    variants = [v["name"] for v in cifar_sweep.spec.search.variants]
    assert len(variants) == 5 and len(df) == 10
    assert set(df["status"]) == {"completed"}
    assert (df.groupby("variant")["seed"].apply(sorted).apply(tuple) ==
            tuple(sorted(set(df["seed"])))).all() and df["seed"].nunique() == 2
    for _, row in df.iterrows():
        for m in SPEC_METRICS:
            assert math.isfinite(row[m]), (row["variant"], m)
        assert 0.0 < row["test_ks_probe"] <= 1.0 and 0.0 <= row["test_ks_two_sided"] <= 1.0
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["test_kl"] >= 0.0
        assert row["test_elbo"] < 0.0  # a log-likelihood bound of 3,072 Bernoulli-like pixels
    # beta scales the KL term: beta = 0.5 keeps more nats in the posterior than beta = 2
    kl = df.groupby("variant")["test_kl"].mean()
    assert kl["beta0.5"] > kl["beta2"]


def test_cifar_job_prints_the_runs_table_with_statistics(cifar_sweep, capsys):
    summary = cifar_sweep.summary(group_by=["variant"])
    assert sorted(summary.index) == sorted(v["name"] for v in cifar_sweep.spec.search.variants)
    assert (summary[("test_ks_eval", "n")] == 2).all()
    means = list(summary[("test_ks_eval", "mean")])
    assert means == sorted(means)  # the job minimises test_ks_eval: best model first
    assert main(["table", str(cifar_sweep.path), "--group-by", "variant"]) == 0
    out = capsys.readouterr().out
    assert out.count("±") >= 5 * len(SPEC_METRICS) and "derp5" in out and "test_ks_probe" in out
    assert main(["compare", str(cifar_sweep.path), "--metric", "test_accuracy"]) == 0
    assert "p_value" in capsys.readouterr().out
    # a metric the trials never reported: an error naming it and the ones there are, either way
    for grouped in ([], ["--group-by", "variant"]):
        assert main(["table", str(cifar_sweep.path), "--metrics", "test_ks_eval,time_total_s", *grouped]) == 2
        err = capsys.readouterr().err
        assert "--metrics time_total_s" in err and "train_seconds" in err and "Traceback" not in err


def test_cifar_job_writes_reconstruction_and_prior_sample_grids(cifar_sweep):
    for _, row in cifar_sweep.dataframe().iterrows():
        tags = media_tags(Path(row["path"]))
        # media_every=1 and 2 epochs: one grid of each kind per epoch
        assert tags.get("reconstructions") == 2 and tags.get("prior_samples") == 2, tags


def test_celeba_job_runs_on_the_standard_layout(ray_session, tmp_path):
    root = tmp_path / "data"
    write_celeba(root, n=40)
    spec = load_spec(JOBS / "derp_vae_celeba.yaml", TINY + [f"data.root={root}", "train.epochs=1"])
    path, _ = run_sweep(spec, storage_path=str(tmp_path / "sweeps"), verbose=0)
    sweep = load_sweep(path)
    df = sweep.dataframe()
    assert len(df) == 6 and set(df["status"]) == {"completed"}
    assert set(df["variant"]) == {"standard", "beta0.1", "derp5"}
    assert df[list(SPEC_METRICS)].notna().all().all()
    table = sweep.table(group_by=["variant"])
    assert table.count("\n") >= 4 and "±" in table
