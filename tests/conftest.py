"""Shared test setup: one Ray instance per test session, tiny data written in real formats."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/datafiles.py

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Rays bind to 127.0.0.1
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
# reference classifiers the sample-quality tests train go to a folder of this session, not ~/.cache
# (set before Ray starts, so trial processes inherit it)
os.environ.setdefault("SWEEPLAB_CACHE_DIR", tempfile.mkdtemp(prefix="sweeplab-test-cache-"))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (2 CPUs, no dashboard); every sweep test shares it."""
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")  # as sweeplab's own local Ray (runner.init_ray)
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """A fresh storage path for sweep folders."""
    p = tmp_path / "sweeps"
    p.mkdir()
    return p
