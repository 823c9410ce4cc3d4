"""Failures found by trying sweeplab as a new user would (issue 17), around a run: a real closed
TCP port for ``--address``, a real S3 client against an endpoint where nothing listens, a real
sweep in which a trial errors (``SWEEPLAB_FAULT_INJECT``), a real pipe closed by its reader and a
real Ctrl-C (the job files and arguments themselves are in test_new_user_failures.py). A sweep's
exit status says whether it finished cleanly (0), left trials unfinished or produced nothing (1),
or finished with errored trials (3); anything that fails before a sweep runs ends in one
``sweeplab: error:`` line, never a traceback.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from new_user_cli import ROOT, _cli, _closed_port, _error_lines, _job, _refuse_ray
from sweeplab.cli import main


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


def test_table_of_the_storage_folder_names_the_sweeps_in_it(errored_sweep, capsys):
    _, path = errored_sweep
    storage = Path(path).parent
    code, _, err = _cli(["table", storage], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"{storage}: holds no sweeplab sweep itself but the sweep errored; give one of them, e.g. {path}" in line



# -- Ctrl-C before the trials -------------------------------------------------------------------
CTRL_C_DURING_LOAD = """
import os, signal, sys
import sweeplab.runner.run as run
from sweeplab.cli import main

# a terminal's Python has Python's own SIGINT handler; a runner that started this test suite in
# the background (nohup ... &) passes SIGINT ignored, which would make the Ctrl-C below a no-op
signal.signal(signal.SIGINT, signal.default_int_handler)
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
