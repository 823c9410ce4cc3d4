"""Helpers shared by test_new_user_failures.py and test_new_user_failures_runs.py: a valid job,
``sweeplab`` run in this process, the checks of a one-line error, a closed TCP port."""
from __future__ import annotations

import socket
from pathlib import Path

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
