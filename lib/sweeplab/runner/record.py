"""The reproducibility record of a sweep folder (``sweeplab_record.json``): what ran the sweep.

Every ``sweeplab run`` and ``resume`` appends one *session* to it: the command line and working
directory, when, sweeplab's version and the git commit of its source tree (and whether tracked
files had uncommitted changes), Python, the OS, the CPU model and count, GPU models, the Ray
cluster's resources and the versions of the packages a result depends on. The resolved job
(every override applied) is stored once, beside the sessions (it is also
``sweeplab_job.yaml``). ``sweeplab info PATH`` prints it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from sweeplab.runner.folder import is_uri, write_file

#: The record's file name inside a sweep folder.
RECORD_FILE = "sweeplab_record.json"
#: Distributions whose versions are recorded (those installed).
PACKAGES = ("sweeplab", "ray", "optuna", "torch", "torchvision", "numpy", "scipy", "pandas", "scikit-learn",
            "pydantic", "pyarrow", "cmaes", "tensorboard", "matplotlib", "pyyaml")


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state(path: Path | None = None) -> dict[str, Any]:
    """The git commit of the checkout holding ``path`` (default: sweeplab's own source) and
    whether tracked files differ from it (``dirty``); ``{"commit": None, ...}`` outside a
    checkout (an installed wheel) or without git."""
    where = path or Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(["git", "-C", str(where), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.split()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "repository": None,
                "why": "not a git checkout (an installed package) or git is not installed"}
    return {"commit": top[1], "dirty": bool(status.strip()), "repository": top[0],
            "changed_files": [line[3:] for line in status.splitlines()][:50]}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """The driver machine's GPU models (by torch when it is already imported, else nvidia-smi)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return []
        except Exception:  # noqa: BLE001 - a broken driver must not stop a sweep
            pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        return []


def _ray_cluster() -> dict[str, Any]:
    """CPUs, GPUs, accelerator types and nodes of the Ray the sweep runs on (empty without Ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    res = ray.cluster_resources()
    return {"nodes": len([n for n in ray.nodes() if n.get("Alive")]), "cpus": res.get("CPU", 0),
            "gpus": res.get("GPU", 0), "accelerators": sorted(k.split(":", 1)[1] for k in res
                                                              if k.startswith("accelerator_type:"))}


def session(event: str, argv: list[str] | None = None) -> dict[str, Any]:
    """One session's facts (see the module's docstring); ``event``: ``run`` or ``resume``."""
    return {
        "event": event,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
        "sweeplab_git": git_state(),
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "hostname": platform.node(),
        "cpu": {"model": _cpu_model(), "count": os.cpu_count()},
        "gpus": _gpus(),
        "ray_cluster": _ray_cluster(),
        "packages": _versions(),
    }


def read_record(path: str) -> dict[str, Any] | None:
    """The record of a sweep folder (local or URI), or None when it has none (older sweeps)."""
    try:
        if is_uri(path):
            import pyarrow.fs as pafs

            fs, p = pafs.FileSystem.from_uri(path)
            with fs.open_input_stream(f"{p}/{RECORD_FILE}") as fh:
                return json.loads(fh.read().decode())
        return json.loads((Path(path) / RECORD_FILE).read_text())
    except (FileNotFoundError, OSError, json.JSONDecodeError):
        return None


def write_record(path: str, job: dict[str, Any], event: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Append a session to the sweep folder's record (creating it with the resolved ``job``);
    written whole to a temporary file and renamed, so a crash never leaves half a record.

    Returns:
        The record as written.
    """
    record = read_record(path) or {"record_version": 1, "job": job, "sessions": []}
    record["sessions"].append(session(event, argv))
    write_file(path, RECORD_FILE, json.dumps(record, indent=2, default=str))
    return record


def format_record(record: dict[str, Any] | None, path: str) -> str:
    """The record as text for ``sweeplab info``: one block a session, the job last."""
    if record is None:
        return (f"{path}: no reproducibility record ({RECORD_FILE}); the sweep was written by an older "
                "sweeplab. Its job is in sweeplab_job.yaml.")
    lines = [f"# {path}"]
    for i, s in enumerate(record.get("sessions", []), 1):
        git = s.get("sweeplab_git") or {}
        commit = git.get("commit")
        state = ("not a git checkout" if commit is None
                 else f"{commit}{' (uncommitted changes: ' + ', '.join(git.get('changed_files', [])) + ')' if git.get('dirty') else ' (clean)'}")
        cluster = s.get("ray_cluster") or {}
        lines += [f"## session {i}: {s.get('event')} at {s.get('started')}",
                  f"command      {' '.join(s.get('command', []))}",
                  f"cwd          {s.get('cwd')}",
                  f"sweeplab     {s.get('packages', {}).get('sweeplab', '?')}, git {state}",
                  f"python       {s.get('python')}",
                  f"os           {s.get('os')} on {s.get('hostname')}",
                  f"cpu          {s.get('cpu', {}).get('model')} x {s.get('cpu', {}).get('count')}",
                  f"gpus         {', '.join(s.get('gpus') or []) or 'none'}",
                  f"ray cluster  {cluster.get('nodes', '?')} node(s), {cluster.get('cpus', '?')} CPUs, "
                  f"{cluster.get('gpus', '?')} GPUs {' '.join(cluster.get('accelerators', []))}".rstrip(),
                  "packages     " + ", ".join(f"{k} {v}" for k, v in s.get("packages", {}).items())]
    import yaml

    lines += ["## job (resolved, every override applied)", yaml.safe_dump(record.get("job", {}), sort_keys=False,
                                                                         allow_unicode=True).rstrip()]
    return "\n".join(lines)
