"""sweeplab on a real two-node Ray cluster on this machine, and the cluster launcher config.

The cluster is started the way users start one by hand: ``ray start --head`` and a second
``ray start --address`` with its own resources, each a ``--block`` process in its own session,
on loopback addresses of their own (127.0.0.2 = head, 127.0.0.3 = worker) so that the two nodes
look like two hosts, and with Ray's token authentication on (a token file of the test's own).
Both nodes use a temp dir of their own, so no other Ray on the machine (the suite's session Ray,
anyone's ``ray.init()``) can find or join this cluster. The test stops both nodes itself by
killing every process of their sessions; it never runs ``ray stop``.

The sweep drivers are ``sweeplab run ... --address`` subprocesses, as ``ray job submit`` would
run them on a head node.
"""
from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
RAY = str(Path(sys.executable).with_name("ray"))

#: A small CNN job on scikit-learn's digits (no files needed), one CPU per trial. Trials last
#: ~8 s (0.25 s an epoch): long against the seconds a trial actor takes to start, so that with
#: Ray Tune's actor reuse both nodes' actors get a trial.
CLUSTER_JOB = {
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.2},
    "train": {"epochs": 30, "batch_size": 32, "filters": 8, "n_blocks": 2, "threads": 1},
    "search": {"sampler": "grid", "max_concurrent": 2, "variants": [
        {"name": f"lr{i}", "lr": lr} for i, lr in enumerate((3e-3, 1e-2, 5e-3))]},
    "metric": "val_accuracy",
    "scheduler": {"type": "none"},
    "resources": {"cpu": 1, "gpu": 0},
    "checkpoint": {"every": 1, "keep": 1},
    "failure": {"max_failures": 2},
}



# ------------------------------------------------------------------------------------------------
# A two-node cluster made of `ray start --block` processes
# ------------------------------------------------------------------------------------------------
def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid`` (a ``ray start`` and everything it spawned:
    GCS, raylet, agents and the worker processes, which sit in process groups of their own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


class RayNode:
    """One ``ray start --block`` in a new session; :meth:`kill` takes the whole node down."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_started(self, deadline: float) -> None:
        while time.time() < deadline:
            if "Ray runtime started" in self.log.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"ray start ({self.name}) did not come up:\n{self.log.read_text()[-3000:]}")

    def node_id(self) -> str:
        """The node's Ray id, from its raylet's command line."""
        for pid in _session_pids(self.proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            m = re.search(r"--node_id=([0-9a-f]+)", cmd)
            if m and "raylet" in cmd.split("\0")[0]:
                return m.group(1)
        raise RuntimeError(f"no raylet found for {self.name}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        for pid in _session_pids(self.proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None or _session_pids(self.proc.pid):
            self.kill(signal.SIGTERM)
            end = time.time() + 5
            while time.time() < end and _session_pids(self.proc.pid):
                time.sleep(0.2)
            self.kill(signal.SIGKILL)


class LocalCluster:
    """A head (1 CPU and 1 GPU declared, no real GPU needed: Ray's resources are logical) and a
    worker node (1 CPU), with token authentication, quick node-death detection, own temp dir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.temp_dir = tempfile.mkdtemp(prefix="slray-", dir="/tmp")  # short: socket paths
        token = workdir / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.port = _free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update({
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),  # token auth kept on
            "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "4",  # a dead node is noticed in ~2-3 s
            "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "RAY_DEDUP_LOGS": "0", "TUNE_DISABLE_SIGINT_HANDLER": "1",
        })
        self.nodes: list[RayNode] = []

    def start(self, timeout: float = 120) -> "LocalCluster":
        deadline = time.time() + timeout
        common = ["--temp-dir", self.temp_dir, "--min-worker-port", "0", "--max-worker-port", "0"]
        self.head = RayNode("head", ["--head", "--node-ip-address", HEAD_IP, "--port", str(self.port),
                                     "--num-cpus", "1", "--num-gpus", "1", "--include-dashboard", "false",
                                     "--ray-client-server-port", str(_free_port(HEAD_IP)),
                                     "--dashboard-agent-listen-port", str(_free_port(HEAD_IP)), *common],
                            self.env, self.workdir)
        self.nodes.append(self.head)
        while time.time() < deadline:  # the worker joins as soon as the GCS listens
            try:
                socket.create_connection((HEAD_IP, self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        self.worker = RayNode("worker", ["--address", self.address, "--node-ip-address", WORKER_IP,
                                         "--num-cpus", "1", "--num-gpus", "0",
                                         "--dashboard-agent-listen-port", str(_free_port(WORKER_IP)), *common],
                              self.env, self.workdir)
        self.nodes.append(self.worker)
        self.head.wait_started(deadline)
        self.worker.wait_started(deadline)
        return self

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def sweeplab(self, *args: str, extra_env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        """``sweeplab ARGS --address HEAD`` as a driver subprocess (output in the returned Popen)."""
        return subprocess.Popen([sys.executable, "-m", "sweeplab.cli", *args, "--address", self.address],
                                env={**self.env, **(extra_env or {})}, cwd=self.workdir, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c.start()
    finally:
        c.stop()


def _write_job(path: Path, **changes) -> Path:
    raw = copy.deepcopy(CLUSTER_JOB)
    raw.update(changes)
    path.write_text(yaml.safe_dump(raw))
    return path


def _results(trial_dir: Path) -> list[dict]:
    lines = (trial_dir / "result.json").read_text().strip().splitlines() if (trial_dir / "result.json").exists() else []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return out


# ------------------------------------------------------------------------------------------------
# Tests on the cluster
# ------------------------------------------------------------------------------------------------
def test_local_storage_is_refused_on_a_multi_node_cluster(cluster, tmp_path):
    job = _write_job(tmp_path / "job.yaml", name="refused")
    storage = tmp_path / "local-only"
    proc = cluster.sweeplab("run", str(job), "--storage-path", str(storage))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    errors = [line for line in out.splitlines() if line.startswith("sweeplab: error:")]
    assert len(errors) == 1, out
    assert "is local to this machine" in errors[0] and "2 nodes" in errors[0] and "s3://" in errors[0]
    assert "Traceback" not in out
    assert not storage.exists()  # refused before anything was written


def test_fractional_gpus_share_one_gpu(cluster, tmp_path):
    """Four trials asking for a quarter GPU each all run at once on the one (logical) GPU of the
    head node; without CUDA here they train on the CPU, as they would on a GPU-less torch.

    Each trial lasts well beyond the seconds its actor takes to start (sharing the head's one
    CPU), and the overlap is counted from when each trial was *surely* running by Ray's own
    per-trial times, never from rounding: Ray's ``timestamp`` is the whole second (rounded down)
    of the trial's last result, and its ``time_total_s`` sums the trial's measured iteration times
    (exact, and never longer than the trial ran), so the trial ran throughout
    ``[timestamp + 1 - time_total_s, timestamp]``."""
    epochs = 80  # ~14 s a trial on a quiet machine, against actors starting within ~1-2 s of each other
    job = _write_job(tmp_path / "job.yaml", name="quarter", train={**CLUSTER_JOB["train"], "epochs": epochs},
                     search={"sampler": "grid", "max_concurrent": 4, "variants": [
                         {"name": f"lr{i}", "lr": lr} for i, lr in enumerate((3e-3, 1e-2, 5e-3, 2e-3))]},
                     resources={"cpu": 0.25, "gpu": 0.25})
    storage = tmp_path / "sweeps"
    proc = cluster.sweeplab("run", str(job), "--storage-path", str(storage), "--quiet",
                            extra_env={"SWEEPLAB_SHARED_FS": "1"})
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    trials = sorted((storage / "quarter").glob("trial_*"))
    assert len(trials) == 4
    head = cluster.head.node_id()
    surely_running = []
    for t in trials:
        res = _results(t)
        assert [r["training_iteration"] for r in res] == list(range(1, epochs + 1))
        assert {r["node_id"] for r in res} == {head}  # the only node with a GPU
        assert {r["device"] for r in res} == {"cpu"}
        end, total = res[-1]["timestamp"], res[-1]["time_total_s"]
        surely_running.append((end + 1 - total, end))
    # at some moment more than one quarter-GPU trial was running on the single GPU
    overlaps = max(sum(start <= s <= end for start, end in surely_running) for s, _ in surely_running)
    first = min(start for start, _ in surely_running)
    print(f"\nquarter GPUs: {overlaps} of 4 trials surely running at once (start, seconds surely running: "
          f"{[(round(a - first, 1), round(b - a, 1)) for a, b in sorted(surely_running)]})")
    assert overlaps >= 3, surely_running


def test_sweep_survives_losing_a_worker_node(cluster, tmp_path):
    """CPU-only trials spread over both nodes (the head also has a GPU); the worker node is
    killed (SIGKILL to all of its processes) while one of its trials runs; that trial is retried
    on the head from its last checkpoint and every trial finishes."""
    job = _write_job(tmp_path / "job.yaml", name="nodeloss")
    storage = tmp_path / "sweeps"
    exp = storage / "nodeloss"
    worker_id, head_id = cluster.worker.node_id(), cluster.head.node_id()
    t0 = time.time()
    proc = cluster.sweeplab("run", str(job), "--storage-path", str(storage), "--quiet",
                            extra_env={"SWEEPLAB_SHARED_FS": "1"})
    victim, killed_after = None, 0
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and victim is None:
        for t in exp.glob("trial_*"):
            res = _results(t)
            if res and res[-1]["node_id"] == worker_id and 3 <= len(res) <= 22:
                victim, killed_after = t.name, res[-1]["training_iteration"]
                break
        time.sleep(0.1)
    if victim is None:
        proc.kill()
        pytest.fail(f"no trial ran on the worker node:\n{(proc.communicate()[0] or '')[-4000:]}")
    cluster.worker.kill()
    killed_at = time.time()
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-4000:]

    from sweeplab import load_sweep

    df = load_sweep(str(exp)).dataframe()
    assert len(df) == 3 and set(df["status"]) == {"completed"}, df[["trial_id", "status"]]
    epochs = CLUSTER_JOB["train"]["epochs"]
    nodes_used, retried = set(), []
    for t in exp.glob("trial_*"):
        res = _results(t)
        nodes_used |= {r["node_id"] for r in res}
        assert {r["device"] for r in res} == {"cpu"}  # gpu: 0 trials stay on the CPU, also on the GPU head
        iters = [r["training_iteration"] for r in res]
        assert iters[-1] == epochs and set(iters) == set(range(1, epochs + 1)), (t.name, iters)
        if t.name == victim:
            on_worker = [r["training_iteration"] for r in res if r["node_id"] == worker_id]
            after = [r["training_iteration"] for r in res if r["node_id"] == head_id]
            assert on_worker and after, (t.name, [(r["training_iteration"], r["node_id"][:6]) for r in res])
            # continued from its last checkpoint: at most the one epoch in flight was redone
            assert after[0] >= killed_after and after[0] <= on_worker[-1] + 1, (on_worker, after)
            retried.append(t.name)
        else:
            assert iters == list(range(1, epochs + 1)), (t.name, iters)  # unaffected trials ran once
    assert nodes_used == {worker_id, head_id}  # the sweep really spread over both nodes
    assert retried == [victim]
    print(f"\nnode loss: 3 trials planned, 3 finished, 1 retried ({victim} from iteration {killed_after}), "
          f"0 lost; sweep {time.time() - t0:.1f} s, {time.time() - killed_at:.1f} s after the kill")


# ------------------------------------------------------------------------------------------------
# The cluster launcher config
# ------------------------------------------------------------------------------------------------
def test_cluster_yaml_is_a_valid_secure_ray_cluster_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    import jsonschema
    import ray.autoscaler

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)  # Ray's own cluster schema, as written
    config = prepare_config(copy.deepcopy(raw))  # with Ray's defaults filled in, as `ray up` does
    validate_config(config)
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["resourcez"] = {"GPU": 1}
    with pytest.raises(jsonschema.ValidationError):  # the schema check is real
        validate_config(prepare_config(bad))

    types = config["available_node_types"]
    gpu = [t for name, t in types.items() if name != config["head_node_type"] and t["resources"].get("GPU", 0) > 0]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in gpu)  # autoscaled GPU workers
    assert all("CPU" in t["resources"] for t in types.values())  # resources declared, not guessed
    # the environment comes from this repository
    mounts = config["file_mounts"]
    repo_mount = next(remote for remote, local in mounts.items() if local == ".")
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert any(f"-e {repo_mount.replace('/home/ubuntu', '~')}" in c or f"-e {repo_mount}" in c for c in installs)
    assert re.search(r'"ray\[default\]==\d+\.\d+\.\d+"', " ".join(config["setup_commands"]))
    # token authentication on every node, the token shipped from `ray get-auth-token --generate`
    assert mounts.get("/home/ubuntu/.ray/auth_token") == "~/.ray/auth_token"
    assert any("RAY_AUTH_MODE=token" in c for c in config["initialization_commands"])
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert "RAY_AUTH_MODE=disabled" not in (REPO / "cluster.yaml").read_text()
    # the dashboard (and the job API behind it) only on loopback: reached through an SSH tunnel
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in json.dumps(config)
