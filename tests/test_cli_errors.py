"""Bad input at the command line: every case exits with status 2 and one ``sweeplab: error:``
line that names what is wrong (file, field, value) and how to fix it, with no traceback, and
(for ``run``) before Ray starts and before anything is written.

Job files, data files and sweep folders are built per case in their real formats
(tests/datafiles.py writes the datasets, which are then truncated or corrupted).
"""
from __future__ import annotations

import copy
import gzip
from pathlib import Path
from typing import Callable

import pytest
import yaml

import datafiles
import sweeplab.runner as runner
from sweeplab.cli import main

GOOD = {
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.2},
    "train": {"epochs": 2, "batch_size": 64, "filters": 8, "n_blocks": 2},
    "search": {"sampler": "tpe", "num_samples": 2, "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
    "metric": "val_accuracy",
}


def _job(tmp: Path, text_or_changes, name: str = "job.yaml") -> str:
    """Write a job file: raw text, or GOOD with dotted-path changes (value None deletes)."""
    path = tmp / name
    if isinstance(text_or_changes, str):
        path.write_text(text_or_changes)
        return str(path)
    raw = copy.deepcopy(GOOD)
    for dotted, value in text_or_changes.items():
        node = raw
        keys = dotted.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _run(tmp: Path, changes: dict, *extra: str) -> list[str]:
    return ["run", _job(tmp, changes), "--storage-path", str(tmp / "sweeps"), *extra]


# -- data in real formats, then broken ---------------------------------------------------------
def _mnist_truncated(tmp: Path) -> list[str]:
    info = datafiles.write_mnist_idx(tmp / "data", gz=False, n_train=60, n_test=20, size=28)
    images = info["files"]["train-images-idx3-ubyte"][0]
    images.write_bytes(images.read_bytes()[:5000])  # the header promises 60 images
    return _run(tmp, {"data.name": "mnist", "data.root": str(tmp / "data")})


def _mnist_corrupt_gz(tmp: Path) -> list[str]:
    info = datafiles.write_mnist_idx(tmp / "data", gz=True, n_train=60, n_test=20)
    gz = info["files"]["t10k-labels-idx1-ubyte"][0]
    gz.write_bytes(gzip.compress(b"not an idx file at all")[:-6])  # cut before the gzip trailer
    return _run(tmp, {"data.name": "mnist", "data.root": str(tmp / "data")})


def _mnist_wrong_magic(tmp: Path) -> list[str]:
    info = datafiles.write_mnist_idx(tmp / "data", gz=False, n_train=60, n_test=20)
    labels = info["files"]["train-labels-idx1-ubyte"][0]
    data = bytearray(labels.read_bytes())
    data[2:4] = b"\x0d\x03"  # a float32 3-d array's magic where uint8 labels belong
    labels.write_bytes(bytes(data))
    return _run(tmp, {"data.name": "mnist", "data.root": str(tmp / "data")})


def _cifar_corrupt_jpeg(tmp: Path) -> list[str]:
    info = datafiles.write_cifar_image_folder(tmp / "data", n_per_class=2, size=32)
    victim = sorted((Path(info["base"]) / "train").rglob("*.jpg"))[3]
    victim.write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    return _run(tmp, {"data.name": "cifar10", "data.root": str(tmp / "data"), "train.n_blocks": 2})


def _celeba_missing_attributes(tmp: Path) -> list[str]:
    info = datafiles.write_celeba(tmp / "data", n=12)
    Path(info["attr_file"]).unlink()
    return _run(tmp, {"data.name": "celeba", "data.root": str(tmp / "data"),
                      "data.options": {"attribute": "Smiling", "image_size": 32}})


def _celeba_unknown_attribute(tmp: Path) -> list[str]:
    datafiles.write_celeba(tmp / "data", n=12)
    return _run(tmp, {"data.name": "celeba", "data.root": str(tmp / "data"),
                      "data.options": {"attribute": "Smiley", "image_size": 32}})


# -- sweep folders that are not (whole) sweeps --------------------------------------------------
def _empty_dir(tmp: Path) -> Path:
    d = tmp / "not-a-sweep"
    d.mkdir()
    (d / "notes.txt").write_text("just a folder")
    return d


def _never_started(tmp: Path) -> list[str]:
    d = tmp / "sweeps" / "half"
    d.mkdir(parents=True)
    (d / runner.JOB_FILE).write_text(yaml.safe_dump({**GOOD, "name": "half"}))
    return ["resume", str(d)]


def _data_gone(tmp: Path) -> list[str]:
    """A started sweep whose dataset folder was moved away before resuming."""
    d = tmp / "sweeps" / "moved"
    d.mkdir(parents=True)
    job = {**GOOD, "name": "moved", "data": {"name": "mnist", "root": str(tmp / "gone")}}
    (d / runner.JOB_FILE).write_text(yaml.safe_dump(job))
    (d / "tuner.pkl").write_bytes(b"")  # never read: the data check comes first
    return ["resume", str(d)]


def _corrupt_job_in_sweep(tmp: Path) -> list[str]:
    d = tmp / "sweeps" / "broken"
    d.mkdir(parents=True)
    (d / runner.JOB_FILE).write_text("trainable: [cnn_classifier\n")
    return ["best", str(d)]


# (id, argv builder, fragments the one error line must contain)
CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    # the job file itself
    ("missing-file", lambda t: ["validate", str(t / "nope.yaml")], ["nope.yaml", "no such job file"]),
    ("malformed-yaml", lambda t: ["validate", _job(t, "trainable: cnn_classifier\ndata: {name: digits\nmetric: x\n")],
     ["job.yaml", "malformed YAML at line"]),
    ("tab-indent", lambda t: ["validate", _job(t, "trainable: cnn_classifier\ndata:\n\tname: digits\n")],
     ["malformed YAML at line 3"]),
    ("python-tag", lambda t: ["validate", _job(t, f"!!python/object/apply:os.system ['touch {t}/pwned']\n")],
     ["malformed YAML", "python/object/apply"]),
    ("not-a-mapping", lambda t: ["validate", _job(t, "- trainable\n- data\n")], ["must be a mapping", "not list"]),
    ("empty-file", lambda t: ["validate", _job(t, "")], ["must be a mapping", "not NoneType"]),
    # fields
    ("unknown-key", lambda t: ["validate", _job(t, {"epochz": 3})], ["epochz", "unknown field", "README"]),
    ("unknown-nested-key", lambda t: ["validate", _job(t, {"search.samplr": "tpe"})],
     ["search.samplr", "unknown field"]),
    ("unknown-hyperparameter", lambda t: ["validate", _job(t, {"train.epochz": 3})],
     ["train.epochz", "no hyperparameter", "known:"]),
    ("missing-required", lambda t: ["validate", _job(t, {"metric": None})], ["metric", "required field is missing"]),
    ("wrong-type", lambda t: ["validate", _job(t, {"search.num_samples": "many"})],
     ["search.num_samples", "valid integer", "'many'"]),
    ("wrong-type-hyperparameter", lambda t: ["validate", _job(t, {"train.epochs": "ten"})],
     ["train.epochs", "valid integer", "'ten'"]),
    ("empty-range", lambda t: ["validate", _job(t, {"search.space.lr": {"type": "float", "low": 0.01, "high": 0.01}})],
     ["search.space.lr", "empty range", "under train:"]),
    ("inverted-range", lambda t: ["validate", _job(t, {"search.space.lr": {"type": "float", "low": 0.1, "high": 0.01}})],
     ["search.space.lr", "inverted range", "swap them"]),
    ("log-range-from-zero", lambda t: ["validate", _job(t, {"search.space.lr": {"type": "float", "low": 0, "high": 0.1,
                                                                                  "log": True}})],
     ["search.space.lr", "log: true needs low > 0"]),
    ("unknown-param-type", lambda t: ["validate", _job(t, {"search.space.lr": {"type": "double", "low": 0, "high": 1}})],
     ["search.space.lr", "type must be one of float, int, categorical"]),
    ("duplicate-values", lambda t: ["validate", _job(t, {"search.space.norm": {"type": "categorical",
                                                                                 "values": ["batch", "batch"]}})],
     ["search.space.norm", "duplicates"]),
    ("when-unknown-parameter", lambda t: ["validate", _job(t, {"search.space.momentum": {
        "type": "float", "low": 0.5, "high": 0.9, "when": {"optimiser": "sgd"}}})],
     ["search.space.momentum.when", "optimiser", "not a parameter"]),
    ("unknown-sampler", lambda t: ["validate", _job(t, {"search.sampler": "bayes"})], ["search.sampler", "'bayes'"]),
    ("unknown-trainable", lambda t: ["validate", _job(t, {"trainable": "resnet"})],
     ["trainable", "'resnet'", "known:", "cnn_classifier"]),
    ("unknown-dataset", lambda t: ["validate", _job(t, {"data.name": "imagenet"})],
     ["data.name", "'imagenet'", "known:"]),
    ("missing-data-root", lambda t: ["validate", _job(t, {"data.name": "mnist", "data.root": str(t / "nowhere")})],
     ["data.root", "nowhere", "does not exist", "materialize.sh"]),
    ("unknown-metric", lambda t: ["validate", _job(t, {"metric": "accuracy"})],
     ["metric", "'accuracy'", "it reports:", "val_accuracy"]),
    ("grace-period-above-max-t", lambda t: ["validate", _job(t, {"scheduler": {"type": "asha", "grace_period": 5}})],
     ["scheduler.grace_period", "max_t=2", "lower it"]),
    ("repeats-with-asha", lambda t: ["validate", _job(t, {"repeats": 3})], ["repeats", "scheduler: {type: none}"]),
    ("gpu-fraction-above-one", lambda t: ["validate", _job(t, {"resources": {"cpu": 1, "gpu": 1.5}})],
     ["resources.gpu", "1.5", "fraction below 1 or a whole number"]),
    ("zero-cpus", lambda t: ["validate", _job(t, {"resources": {"cpu": 0}})], ["resources.cpu", "greater than 0"]),
    ("bad-name", lambda t: ["validate", _job(t, {"name": "my sweep/1"})], ["name", "'my sweep/1'"]),
    ("val-fraction-one", lambda t: ["validate", _job(t, {"data.val_fraction": 1.0})],
     ["data.val_fraction", "less than 1"]),
    # command-line overrides
    ("set-without-equals", lambda t: ["validate", _job(t, {}), "--set", "train.epochs"],
     ["--set 'train.epochs'", "dotted.field=value"]),
    ("set-through-a-value", lambda t: ["validate", _job(t, {}), "--set", "metric.name=x"],
     ["--set metric.name", "not a mapping"]),
    ("set-bad-yaml", lambda t: ["validate", _job(t, {}), "--set", "train.epochs=[1,"], ["--set", "not valid YAML"]),
    # data files, read by `run` before Ray starts
    ("truncated-idx", _mnist_truncated, ["train-images-idx3-ubyte", "truncated"]),
    ("corrupt-gzip", _mnist_corrupt_gz, ["t10k-labels-idx1-ubyte.gz"]),
    ("wrong-idx-magic", _mnist_wrong_magic, ["train-labels-idx1-ubyte", "magic"]),
    ("corrupt-jpeg", _cifar_corrupt_jpeg, [".jpg"]),
    ("celeba-no-attribute-file", _celeba_missing_attributes, ["list_attr_celeba.txt"]),
    ("celeba-unknown-attribute", _celeba_unknown_attribute, ["Smiley", "Smiling"]),
    ("val-split-takes-everything", lambda t: _run(t, {"data.val_fraction": 0.9999}),
     ["data.val_fraction=0.9999", "choose a fraction"]),
    ("val-objective-without-split", lambda t: _run(t, {"data.val_fraction": None}),
     ["'val_accuracy'", "validation split", "data.val_fraction"]),
    ("bad-fault-injection", lambda t: ["run", _job(t, {}), "--storage-path", str(t / "sweeps")],
     ["SWEEPLAB_FAULT_INJECT", "KIND@ITERATION"]),
    # sweep folders
    ("resume-a-plain-folder", lambda t: ["resume", str(_empty_dir(t))], ["not-a-sweep", "holds no sweeplab sweep"]),
    ("resume-unknown-name", lambda t: ["resume", "never-ran", "--storage-path", str(t)],
     ["no sweep named 'never-ran'", "--storage-path"]),
    ("resume-never-started", _never_started, ["never started", "sweeplab run"]),
    ("resume-with-data-gone", _data_gone, ["moved/sweeplab_job.yaml", "data.root", "gone"]),
    ("table-of-a-plain-folder", lambda t: ["table", str(_empty_dir(t))], ["holds no sweeplab sweep"]),
    ("best-of-a-corrupt-job", _corrupt_job_in_sweep, ["sweeplab_job.yaml", "corrupt", "restore it"]),
    # the command line itself (argparse: a usage line, then the error)
    ("missing-argument", lambda t: ["run"], ["the following arguments are required: job"]),
    ("not-a-number", lambda t: ["run", _job(t, {}), "--num-samples", "lots"], ["--num-samples", "invalid int value"]),
]


def _refuse_ray(*args, **kwargs):
    raise AssertionError("Ray was started for bad input")


@pytest.mark.parametrize("case, build, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_clear_line(case, build, fragments, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sweeplab.runner.cluster.init_ray", _refuse_ray)  # every error comes before Ray starts
    if case == "bad-fault-injection":
        monkeypatch.setenv("SWEEPLAB_FAULT_INJECT", "explode@2")
    else:
        monkeypatch.delenv("SWEEPLAB_FAULT_INJECT", raising=False)
    argv = build(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    if case in ("missing-argument", "not-a-number"):  # argparse: the usage (maybe wrapped), then the error
        assert lines[0].startswith("usage: sweeplab") and sum("error:" in x for x in lines) == 1
        lines = lines[-1:]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(("sweeplab: error: ", "sweeplab run: error: ")), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert not (tmp_path / "sweeps").exists() or case.startswith(("resume", "best")), "bad input wrote a sweep"
    assert not (tmp_path / "pwned").exists()  # the YAML tag was never executed
