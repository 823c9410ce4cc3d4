"""Failures found by trying sweeplab as a new user would (issue 17), each reproduced the way a
user meets it: the command line on real files, a real closed TCP port for ``--address``, a real
S3 client against an endpoint where nothing listens, a real pipe closed by its reader, and a real
sweep in which a trial errors (``SWEEPLAB_FAULT_INJECT``). Bad input must end in one
``sweeplab: error:`` line naming what is wrong, exit status 2, never a traceback; a sweep's exit
status says whether it finished cleanly (0), left trials unfinished or produced nothing (1), or
finished with errored trials (3).
"""
from __future__ import annotations

import copy
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeplab.cli import main

ROOT = Path(__file__).resolve().parents[1]

GOOD = {
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.2},
    "train": {"epochs": 2, "batch_size": 64, "filters": 8, "n_blocks": 2},
    "search": {"sampler": "tpe", "num_samples": 2, "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "norm": {"type": "categorical", "values": ["batch", "none"]}}},
    "metric": "val_accuracy",
}


def _job(tmp: Path, raw: dict | None = None, name: str = "job.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(raw if raw is not None else GOOD))
    return path


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``sweeplab ARGV`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _error_lines(err: str) -> list[str]:
    """The error's lines, after checking it is a ``sweeplab: error:`` message with no traceback."""
    assert "Traceback" not in err and "Error:" not in err.replace("sweeplab: error:", ""), err
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith("sweeplab: error: "), err
    return lines


def _closed_port() -> int:
    """A local TCP port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refuse_ray(*args, **kwargs):
    raise AssertionError("Ray was started for bad input")


# -- job files ----------------------------------------------------------------------------------
NOT_TEXT = {
    "latin1": yaml.safe_dump(GOOD).encode() + "# réglages de Cécile\n".encode("latin-1"),
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00",
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("kind", sorted(NOT_TEXT))
def test_a_job_file_that_is_not_utf8_text_is_one_line(kind, command, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sweeplab.runner.cluster.init_ray", _refuse_ray)
    job = tmp_path / f"job.{kind}"
    job.write_bytes(NOT_TEXT[kind])
    extra = ["--storage-path", tmp_path / "sweeps"] if command == "run" else []
    code, _, err = _cli([command, job, *extra], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert str(job) in line and "not UTF-8" in line, line
    assert not (tmp_path / "sweeps").exists()


def test_a_utf8_job_file_with_a_byte_order_mark_reads(tmp_path, capsys):
    job = tmp_path / "bom.yaml"
    job.write_bytes("\ufeff".encode() + yaml.safe_dump(GOOD).encode())
    code, out, err = _cli(["validate", job], capsys)
    assert code == 0, err
    assert "OK" in out


def test_a_folder_given_as_job_file_says_so(tmp_path, capsys):
    code, _, err = _cli(["validate", tmp_path], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert str(tmp_path) in line and "folder, not a job file" in line, line


@pytest.mark.parametrize("item", ["train..epochs=3", "train.=3", ".epochs=3"])
def test_an_override_with_an_empty_part_is_refused(item, tmp_path, capsys):
    code, _, err = _cli(["validate", _job(tmp_path), "--set", item], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert item in line and "empty part" in line, line


def test_override_spaces_around_dots_are_ignored(tmp_path, capsys):
    code, out, err = _cli(["validate", _job(tmp_path), "--set", "train. epochs =1"], capsys)
    assert code == 0, err
    assert "max_t=1" in out  # ASHA's max_t is the one epoch


def test_a_list_override_without_brackets_says_how_to_write_a_list(tmp_path, capsys):
    code, _, err = _cli(["validate", _job(tmp_path), "--set", "search.space.norm.values=none,batch"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "search.space.norm.values: Input should be a valid list" in line and "[a, b]" in line, line


def test_override_errors_are_each_reported_under_their_own_field(tmp_path, capsys):
    job = _job(tmp_path)
    code, _, err = _cli(["validate", job, "--set", "train.epochs=abc",
                         "--set", "search.space.norm.values=[none,bogus]"], capsys)
    assert code == 2
    lines = _error_lines(err)
    epochs = [x for x in lines if "train.epochs:" in x]
    norm = [x for x in lines if "search.space.norm:" in x]
    assert len(lines) == 2 and len(epochs) == 1 and len(norm) == 1, lines
    assert "'abc'" in epochs[0] and "bogus" not in epochs[0]
    assert "'bogus'" in norm[0] and "abc" not in norm[0] and "epochs" not in norm[0]


def test_a_bad_variant_is_reported_apart_from_a_bad_fixed_value(tmp_path, capsys):
    raw = copy.deepcopy(GOOD)
    raw["train"]["epochs"] = "abc"
    raw["search"] = {"sampler": "grid", "space": {"norm": {"type": "categorical", "values": ["none", "batch"]}},
                     "variants": [{"name": "wide", "filters": 16}, {"name": "broken", "filters": -1}]}
    code, _, err = _cli(["validate", _job(tmp_path, raw)], capsys)
    assert code == 2
    lines = _error_lines(err)
    assert len(lines) == 2, lines
    assert "train.epochs:" in lines[0] and "'abc'" in lines[0] and "filters" not in lines[0]
    assert "search.variants[1] (broken): filters:" in lines[1] and "epochs" not in lines[1]


def test_a_key_given_twice_is_refused_not_silently_dropped(tmp_path, capsys):
    """PyYAML keeps the last of two ``train:`` blocks: the first block's values would vanish."""
    job = tmp_path / "twice.yaml"
    job.write_text(yaml.safe_dump(GOOD) + "train:\n  epochs: 3\n")
    first = yaml.safe_dump(GOOD).splitlines().index("train:") + 1
    code, _, err = _cli(["validate", job], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"duplicate key 'train' (first at line {first})" in line and str(job) in line, line
    from sweeplab.spec.load import read_yaml

    merged = tmp_path / "merged.yaml"  # a YAML merge key, overridden by the mapping's own value, is no duplicate
    merged.write_text("small: &small {batch_size: 64, epochs: 2}\ntrain:\n  <<: *small\n  epochs: 1\n")
    assert read_yaml(merged)["train"] == {"batch_size": 64, "epochs": 1}


def test_a_data_root_that_is_a_file_says_so(tmp_path, capsys):
    root = tmp_path / "mnist.tar.gz"
    root.write_bytes(b"not a folder")
    code, _, err = _cli(["validate", _job(tmp_path), "--set", "data.name=mnist", "--set", f"data.root={root}"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"data.root: '{root}' is a file" in line, line


@pytest.mark.parametrize("where", ["through-a-file", "proc"])
def test_a_storage_path_where_no_folder_can_be_made_is_one_line(where, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sweeplab.runner.cluster.init_ray", _refuse_ray)
    if where == "through-a-file":
        (tmp_path / "results.csv").write_text("a,b\n")
        storage, fragment = tmp_path / "results.csv" / "sweeps", f"{tmp_path / 'results.csv'} is a file"
    else:  # no folder can be made in /proc, whoever runs the test (root included)
        storage, fragment = Path("/proc/sweeplab-test"), "cannot create the sweep folder in /proc"
    code, _, err = _cli(["run", _job(tmp_path), "--storage-path", storage], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert line.startswith(f"sweeplab: error: {storage / 'job'}: ") and fragment in line, line
    assert "--storage-path" in line


# -- storage and cluster that cannot be reached -------------------------------------------------
@pytest.fixture
def s3_nowhere(monkeypatch) -> str:
    """S3 requests go to a local port where nothing listens (fails in seconds, no network
    needed); returns that endpoint's ``host:port``."""
    endpoint = f"127.0.0.1:{_closed_port()}"
    for key, value in {"AWS_ENDPOINT_URL": f"http://{endpoint}", "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("sweeplab.runner.cluster.init_ray", _refuse_ray)
    return endpoint


@pytest.mark.parametrize("command", ["run", "table"])  # resume reads the job as table does
def test_unreachable_s3_storage_names_the_uri_and_the_network_error(command, s3_nowhere, tmp_path, capsys):
    """6 s each: the S3 client's own retries (pyarrow's default strategy, not settable from a URI)."""
    uri = "s3://sweeplab-test-bucket/sweeps"
    argv = {"run": ["run", _job(tmp_path), "--storage-path", uri], "table": ["table", f"{uri}/job"]}[command]
    start = time.monotonic()
    code, _, err = _cli(argv, capsys)
    assert time.monotonic() - start < 30
    assert code == 2
    (line,) = _error_lines(err)
    assert f"{uri}/job: cannot reach the storage:" in line, line
    assert s3_nowhere in line  # the first line of the S3 client's own error
    assert "holds no sweep" not in line


def test_unreachable_gcs_storage_is_reported_within_the_retry_limit(tmp_path, monkeypatch, capsys):
    """Google Cloud Storage without credentials (none can be found: a missing key file): the gs://
    client's default retries last minutes; sweeplab's reads give up after GCS_RETRY_LIMIT_S."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    monkeypatch.setattr("sweeplab.runner.folder.GCS_RETRY_LIMIT_S", 1.0)
    uri = "gs://sweeplab-test-bucket/sweeps/job"
    start = time.monotonic()
    code, _, err = _cli(["table", uri], capsys)
    assert time.monotonic() - start < 15
    assert code == 2
    (line,) = _error_lines(err)
    assert line.startswith(f"sweeplab: error: {uri}: cannot reach the storage: ") and len(line) < 500, line


@pytest.fixture(scope="module")
def job_file(tmp_path_factory) -> Path:
    return _job(tmp_path_factory.mktemp("job"))


def test_run_with_an_address_where_no_cluster_answers_fails_fast(job_file, tmp_path):
    address = f"127.0.0.1:{_closed_port()}"
    env = {**os.environ, "SWEEPLAB_FAULT_INJECT": ""}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sweeplab.cli", "run", str(job_file), "--address", address,
                           "--storage-path", str(tmp_path)], capture_output=True, text=True, timeout=60, env=env)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert elapsed < 30
    (line,) = _error_lines(proc.stderr)
    assert f"--address {address}: no Ray cluster answers" in line and "ray start --head" in line, line


def test_address_auto_checks_the_cluster_ray_would_pick(monkeypatch):
    from sweeplab.runner import SweepError
    from sweeplab.runner.cluster import check_reachable

    port = _closed_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what `--address auto` resolves to first
    with pytest.raises(SweepError, match=rf"--address auto: no Ray cluster answers \(at .*:{port}\).*ray start"):
        check_reachable("auto", timeout=5)
    with pytest.raises(SweepError, match="'63x9' is not a port number"):
        check_reachable("10.0.0.5:63x9")
    with socket.socket() as server:  # something that does answer passes
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")


# -- the documentation's examples ---------------------------------------------------------------
#: A YAML block of docs/job-spec.md that is deliberately not a whole job starts with this line.
PARTIAL = "# partial example"


def _doc_examples() -> list[str]:
    text = (ROOT / "docs" / "job-spec.md").read_text()
    return re.findall(r"^```ya?ml\n(.*?)^```", text, flags=re.M | re.S)


def test_every_job_in_the_job_spec_doc_validates():
    from sweeplab.datasets.base import dataset_names
    from sweeplab.spec import validate_spec

    blocks = _doc_examples()
    whole = [b for b in blocks if not b.lstrip().startswith(PARTIAL)]
    assert len(blocks) >= 2 and whole, "docs/job-spec.md lost its examples"
    for i, block in enumerate(whole):
        raw = yaml.safe_load(block)
        spec = validate_spec(raw, source=f"docs/job-spec.md example {i + 1}", check_data=False)
        assert spec.data.name in dataset_names()  # the data root is the reader's own: not checked


# -- a real sweep in which one trial errors -----------------------------------------------------
SWEEP = {
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.2},
    "train": {"epochs": 1, "batch_size": 128, "filters": 4, "n_blocks": 1, "threads": 1, "lr": 0.01},
    "search": {"sampler": "grid", "space": {"norm": {"type": "categorical", "values": ["none", "batch"]}}},
    "metric": "val_accuracy",
    "scheduler": {"type": "none"},
    "checkpoint": {"every": 1, "keep": 1},
}


@pytest.fixture(scope="module")
def errored_sweep(ray_session, tmp_path_factory) -> tuple[int, str]:
    """``sweeplab run`` of a two-trial grid whose ``norm=batch`` trial raises in its first
    iteration: (exit status, sweep folder)."""
    tmp = tmp_path_factory.mktemp("errored")
    job = _job(tmp, SWEEP, name="errored.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWEEPLAB_FAULT_INJECT", "raise@1:norm=batch")
        code = main(["run", str(job), "--storage-path", str(tmp / "sweeps"), "--quiet"])
    return code, str(tmp / "sweeps" / "errored")


def test_a_sweep_with_errored_trials_exits_3(errored_sweep):
    from sweeplab.cli.running import EXIT_TRIALS_ERRORED
    from sweeplab.results import load_sweep

    code, path = errored_sweep
    df = load_sweep(path).dataframe().set_index("norm")
    assert df.loc["batch", "status"] == "error" and df.loc["none", "status"] == "completed"
    assert code == EXIT_TRIALS_ERRORED == 3


def test_exit_statuses_are_documented():
    from sweeplab.cli import build_parser

    run_help = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    readme = (ROOT / "README.md").read_text()
    for text in (run_help, readme):
        flat = " ".join(text.split())
        assert re.search(r"\b3\b[^.]*errored", flat), "exit status 3 undocumented"
        assert re.search(r"\b1\b[^.]*unfinished", flat), "exit status 1 undocumented"


def test_table_into_a_pipe_its_reader_closed_ends_quietly(errored_sweep):
    """``sweeplab table PATH | head``: the reader is gone before the table is written (the pipe's
    read end is closed before the command starts), so the first write fails with EPIPE."""
    _, path = errored_sweep
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "sweeplab.cli", "table", path], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


# -- Ctrl-C before the trials -------------------------------------------------------------------
CTRL_C_DURING_LOAD = """
import os, signal, sys
import sweeplab.runner.run as run
from sweeplab.cli import main

real = run.prepare_data
def interrupted_load(spec):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while the data loads
    return real(spec)
run.prepare_data = interrupted_load
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_during_the_data_load_is_one_line(job_file, tmp_path):
    """A real SIGINT, delivered to the driver during ``prepare_data`` (before Ray starts)."""
    proc = subprocess.run([sys.executable, "-c", CTRL_C_DURING_LOAD, "run", str(job_file),
                           "--storage-path", str(tmp_path / "sweeps")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "SWEEPLAB_FAULT_INJECT": ""})
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["sweeplab: interrupted (Ctrl-C) during run"], proc.stderr[-2000:]
    assert not (tmp_path / "sweeps" / "job" / "tuner.pkl").exists()


def test_table_of_the_storage_folder_names_the_sweeps_in_it(errored_sweep, capsys):
    _, path = errored_sweep
    storage = Path(path).parent
    code, _, err = _cli(["table", storage], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"{storage}: holds no sweeplab sweep itself but the sweep errored; give one of them, e.g. {path}" in line


def test_table_of_a_job_file_says_it_is_one(tmp_path, capsys):
    job = _job(tmp_path)
    code, _, err = _cli(["table", job, "--storage-path", tmp_path / "sweeps"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "is a file, not a sweep folder" in line and f"sweeplab run {job}" in line, line


def test_a_job_file_name_with_spaces_gives_a_valid_sweep_name(tmp_path, capsys):
    from sweeplab.spec import load_spec

    job = _job(tmp_path, name="fashion cnn (v2).yaml")
    assert load_spec(job).name == "fashion_cnn_v2_"
    code, out, err = _cli(["validate", job], capsys)
    assert code == 0 and "OK" in out, err


@pytest.mark.parametrize("name", ["runs/lr", ".."])
def test_run_name_that_is_not_one_folder_is_refused_before_anything_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sweeplab.runner.cluster.init_ray", _refuse_ray)
    code, _, err = _cli(["run", _job(tmp_path), "--name", name, "--storage-path", tmp_path / "sweeps"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"sweep name {name!r} (--name or name:): one folder name" in line, line
    assert not (tmp_path / "sweeps").exists()
