"""Checks made on a local Ray before a sweep starts: resources no node can hold, storage an
autoscaling cluster cannot share, the temp dir a local Ray keeps its sessions in, URI storage."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from test_cluster import CLUSTER_JOB, REPO, _session_pids, _write_job


def test_gpu_sweep_waits_for_autoscaled_gpu_workers_instead_of_failing(ray_session, monkeypatch, tmp_path):
    """On the launcher's cluster no GPU node exists until the autoscaler adds one: a GPU job is
    accepted when the autoscaler config (what `ray up` leaves on the head) can launch a node that
    fits it, and refused when no node type could ever hold a trial."""
    from sweeplab.runner import SweepError, check_resources, launchable_node_resources
    from sweeplab.spec import validate_spec

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text((REPO / "cluster.yaml").read_text())
    monkeypatch.setenv("SWEEPLAB_AUTOSCALER_CONFIG", str(bootstrap))
    assert {"CPU": 8.0, "GPU": 1.0} in launchable_node_resources()
    quarter = validate_spec({**CLUSTER_JOB, "resources": {"cpu": 2, "gpu": 0.25}})
    check_resources(quarter)  # a g5 worker will come
    too_big = validate_spec({**CLUSTER_JOB, "resources": {"cpu": 2, "gpu": 8}})
    with pytest.raises(SweepError, match="resources.gpu: a trial asks for 8.0 GPUs"):
        check_resources(too_big)
    monkeypatch.setenv("SWEEPLAB_AUTOSCALER_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(SweepError, match="resources.gpu"):  # no autoscaler: only the live nodes count
        check_resources(quarter)


def test_local_storage_is_refused_before_autoscaled_workers_join(ray_session, monkeypatch, tmp_path):
    """A one-node cluster from `ray up` will grow: a local --storage-path is refused already,
    cloud URIs and a declared shared filesystem are accepted."""
    from sweeplab.runner import SweepError, check_storage

    monkeypatch.delenv("SWEEPLAB_SHARED_FS", raising=False)
    monkeypatch.setenv("SWEEPLAB_AUTOSCALER_CONFIG", str(tmp_path / "absent.yaml"))
    check_storage(str(tmp_path / "sweeps"))  # a plain local Ray: one node, nothing to add
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text((REPO / "cluster.yaml").read_text())
    monkeypatch.setenv("SWEEPLAB_AUTOSCALER_CONFIG", str(bootstrap))
    for local in (str(tmp_path / "sweeps"), f"file://{tmp_path}/sweeps"):
        with pytest.raises(SweepError, match="local to this machine, but the cluster's autoscaler adds nodes"):
            check_storage(local)
    check_storage("s3://bucket/sweeps")
    check_storage("gs://bucket/sweeps")
    monkeypatch.setenv("SWEEPLAB_SHARED_FS", "1")
    check_storage(str(tmp_path / "sweeps"))


def test_uri_storage_paths_run_table_best_and_resume(ray_session, tmp_path, capsys):
    """A sweep written through a filesystem URI (``file://`` here: the same pyarrow filesystem
    code that ``s3://`` and ``gs://`` go through, in sweeplab and in Ray Tune) is run, read back
    by ``table`` and ``best`` from the URI, and refused a second run under the same name."""
    from sweeplab.cli import main

    job = _write_job(tmp_path / "uri.yaml", name="uri", train={**CLUSTER_JOB["train"], "epochs": 2},
                     search={"sampler": "grid", "variants": CLUSTER_JOB["search"]["variants"][:2]})
    uri = f"file://{tmp_path}/bucket/sweeps"
    assert main(["run", str(job), "--storage-path", uri, "--quiet"]) == 0
    folder = tmp_path / "bucket" / "sweeps" / "uri"
    assert (folder / "sweeplab_job.yaml").exists() and len(list(folder.glob("trial_*/result.json"))) == 2
    capsys.readouterr()
    assert main(["table", f"{uri}/uri", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].startswith("trial_id,status") and len(rows) == 3 and all(",completed," in r for r in rows[1:])
    assert main(["best", f"{uri}/uri", "--config-only"]) == 0
    best = yaml.safe_load(capsys.readouterr().out)
    assert best["lr"] in (3e-3, 1e-2) and best["epochs"] == 2
    assert main(["run", str(job), "--storage-path", uri, "--quiet"]) == 2  # never overwrites a sweep
    assert "already holds a sweep" in capsys.readouterr().err


def test_a_local_ray_keeps_its_sessions_in_the_temp_dir_sweeplab_passes(monkeypatch):
    """``init_ray`` hands a local Ray an explicit temp dir (``$SWEEPLAB_RAY_TMP``, else Ray's own
    default), Ray keeps its session folders there, and ``ray_temp_root()`` (where a resume looks
    for a killed driver's staging folders) returns that dir without asking Ray's internals. A
    fresh driver process: the suite's own Ray is already running in this one."""
    from ray._common.utils import get_default_ray_temp_dir

    from sweeplab.runner.cluster import local_temp_dir

    for env in ({}, {"TMPDIR": "/var/tmp/x"}, {"RAY_TMPDIR": "/scratch", "TMPDIR": "/var/tmp/x"}):
        for var in ("SWEEPLAB_RAY_TMP", "RAY_TMPDIR", "TMPDIR"):
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        assert str(local_temp_dir()) == get_default_ray_temp_dir(), env  # unset: where Ray itself would go
    temp = tempfile.mkdtemp(prefix="slray-", dir="/tmp")  # short: socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"SWEEPLAB_RAY_TMP": temp, "RAY_USAGE_STATS_ENABLED": "0"})
    script = ("import ray; from sweeplab.runner import init_ray, ray_temp_root; init_ray(num_cpus=1); "
              "print('ROOT', ray_temp_root()); print('ALIVE', len(ray.nodes())); ray.shutdown()")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=180)
        sessions = [p.name for p in Path(temp).glob("session_2*")]
    finally:
        for pid in _session_pids(proc.pid):  # whatever of its Ray outlived the driver
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 0, out[-3000:]
    assert f"ROOT {temp}\n" in out and "ALIVE 1\n" in out, out[-3000:]
    assert len(sessions) == 1, sessions  # Ray's session folder went where sweeplab said


@pytest.mark.parametrize("resources, message", [
    ({"cpu": 64, "gpu": 0}, "resources.cpu: a trial asks for 64.0 CPUs but the largest node has 2"),
    ({"cpu": 1, "gpu": 1}, "resources.gpu: a trial asks for 1.0 GPUs but the largest node has 0"),
])
def test_a_trial_no_node_can_hold_fails_fast(ray_session, monkeypatch, tmp_path, capsys, resources, message):
    """On the suite's local Ray (2 CPUs, no GPU) a job asking for 64 CPUs or a GPU per trial
    exits 2 at once with the reason, instead of Ray Tune waiting forever for resources."""
    from sweeplab.cli import main

    monkeypatch.setenv("SWEEPLAB_AUTOSCALER_CONFIG", str(tmp_path / "absent.yaml"))
    monkeypatch.delenv("SWEEPLAB_ALLOW_PENDING", raising=False)
    job = _write_job(tmp_path / "big.yaml", name="big", resources=resources)
    t0 = time.time()
    code = main(["run", str(job), "--storage-path", str(tmp_path / "sweeps"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert time.time() - t0 < 60 and not (tmp_path / "sweeps" / "big").exists()
