"""Starting or attaching to Ray, and checking that a job can run on it.

A local Ray gets an explicit temp dir (:func:`local_temp_dir`), passed as
``ray.init(_temp_dir=...)``, so sweeplab knows where Ray's session folders (and a killed
driver's staging folders) are without asking Ray's internals: :func:`ray_temp_root`.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import yaml

from sweeplab.runner.folder import SweepError, is_uri
from sweeplab.spec import JobSpec

#: Where a local Ray keeps its session folders, instead of Ray's default (see :func:`local_temp_dir`).
TEMP_DIR_ENV = "SWEEPLAB_RAY_TMP"

#: The autoscaling config the cluster launcher leaves on the head node (``ray up``).
AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"

#: The temp root of the Ray that :func:`init_ray` attached to (a cluster's, read from ``ray.init``).
_attached_temp_root: Path | None = None


def local_temp_dir() -> Path:
    """The temp dir of a local Ray: ``$SWEEPLAB_RAY_TMP``, else where Ray itself would put it
    (``$RAY_TMPDIR/ray``, else ``$TMPDIR/ray``, else ``/tmp/ray``), so nothing moves for users."""
    explicit = os.environ.get(TEMP_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().absolute()
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return Path(base or "/tmp").absolute() / "ray"


def ray_temp_root() -> Path:
    """The folder holding this machine's Ray session folders (``session_*``): the cluster's
    when :func:`init_ray` attached to one, else :func:`local_temp_dir` (what :func:`init_ray`
    passes to a local Ray, and where a killed local driver staged its files)."""
    return _attached_temp_root or local_temp_dir()


def prefer_loopback(address: str | None) -> None:
    """A local Ray (no ``address``) binds to 127.0.0.1 instead of the machine's network address:
    nothing outside this machine needs to reach it. Must run before ``ray`` is first imported
    (Ray reads the switch at import); a cluster driver (``address`` given) is left alone."""
    if address is None and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


#: Seconds :func:`check_reachable` waits for the cluster's address to accept a connection
#: (Ray itself retries an address where nothing answers for minutes).
CONNECT_TIMEOUT_S = 10.0

#: What to do when no cluster answers at ``--address``.
START_HINT = ("start the cluster first (`ray up cluster.yaml`, or `ray start --head` on the head node) "
              "and pass its address: --address auto on a cluster node, else --address HEAD_IP:6379")


def _bootstrap_endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` that ``ray.init(address=...)`` connects to: ``host:port`` as given (port
    6379 if none), ``ray://host[:port]`` (Ray Client, port 10001), ``auto`` resolved as Ray
    resolves it ($RAY_ADDRESS, else the cluster ``ray start`` last started on this machine).
    None when there is nothing to check (``auto`` with no cluster recorded: Ray says so itself).

    Raises:
        SweepError: a port that is not a number.
    """
    target, default_port = address.strip(), 6379
    if target == "auto":
        try:  # Ray's own resolution of "auto" (a private helper; any failure: let ray.init answer)
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # noqa: BLE001
            return None
    elif target.startswith("ray://"):
        target, default_port = target[len("ray://"):], 10001
    if not target or "://" in target:
        return None
    host, sep, port = target.rpartition(":")
    if not sep or "]" in port:  # no port, or a bare IPv6 address in brackets
        host, port = target, str(default_port)
    if not port.isdigit():
        raise SweepError(f"--address {address}: {port!r} is not a port number; write HOST:PORT, e.g. 10.0.0.5:6379")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds when nothing accepts a TCP connection at the cluster's
    address (:func:`_bootstrap_endpoint`), instead of Ray retrying for minutes.

    Raises:
        SweepError: naming the address, the reason (refused, timed out, unknown host) and how
            to start a cluster.
    """
    import socket

    endpoint = _bootstrap_endpoint(address)
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc) or type(exc).__name__)
        where = f"{endpoint[0]}:{endpoint[1]}"
        seen = "" if where == address.strip() else f" (at {where})"
        raise SweepError(f"--address {address}: no Ray cluster answers{seen}: {reason}; {START_HINT}") from None


def _attach(address: str) -> None:
    """``ray.init`` on a running cluster (after :func:`check_reachable`); remembers the
    cluster's temp root."""
    import ray

    global _attached_temp_root
    check_reachable(address)
    try:
        context = ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as exc:
        auth = "auth" in str(exc).lower() or "token" in str(exc).lower()
        hint = ("the cluster uses token authentication: export RAY_AUTH_MODE=token and make its token "
                "available (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN; `ray get-auth-token` "
                "on the head prints it)") if auth else START_HINT
        raise SweepError(f"--address {address}: cannot connect to a Ray cluster; {hint}") from None
    session_dir = (getattr(context, "address_info", None) or {}).get("session_dir")
    _attached_temp_root = Path(session_dir).parent if session_dir else None


def init_ray(address: str | None = None, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Start (or attach to) Ray once per process.

    Args:
        address: ``None`` starts a local Ray (in :func:`local_temp_dir`); ``"auto"`` or
            ``host:port`` attaches to a cluster.
        num_cpus: CPUs of the local Ray (default: all of this machine's).
        dashboard: start Ray's dashboard with a local Ray (off by default: faster start-up).
    """
    import ray

    # Ray's warning about frequent experiment snapshots is expected with per-epoch checkpoints.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    if address:
        _attach(address)
        return
    # Ray starts workers at nice 15, so trials lose the CPU to any other busy process
    # (measured: epochs 2.4x slower inside a sweep than bare on a loaded 2-core machine).
    # The trials are the work here: run them at the driver's priority unless told otherwise.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # address="local": always a fresh Ray of our own; without it ray.init() attaches to the
    # latest cluster that `ray start` left on this machine (/tmp/ray/ray_current_cluster).
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
             logging_level=logging.WARNING, _temp_dir=str(local_temp_dir()))


def launchable_node_resources(config_path: str | None = None) -> list[dict[str, float]]:
    """Resources of the node types an autoscaler may still add (``max_workers > 0``), read from
    the cluster launcher's config on the head node (``$SWEEPLAB_AUTOSCALER_CONFIG``, default
    ``~/ray_bootstrap_config.yaml``). Empty when there is no such file (a hand-started cluster,
    a local Ray) or when it declares no resources.

    Returns:
        One ``{"CPU": ..., "GPU": ...}`` dict per launchable node type.
    """
    path = Path(os.path.expanduser(config_path or os.environ.get("SWEEPLAB_AUTOSCALER_CONFIG",
                                                                   AUTOSCALER_CONFIG)))
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    out = []
    node_types = config.get("available_node_types") or {}
    for name, node_type in node_types.items() if isinstance(node_types, dict) else []:
        if not isinstance(node_type, dict):
            continue
        limit = node_type.get("max_workers", config.get("max_workers", 0))
        if name != config.get("head_node_type") and limit and isinstance(node_type.get("resources"), dict):
            out.append({k: float(v) for k, v in node_type["resources"].items() if isinstance(v, (int, float))})
    return out


def check_resources(spec: JobSpec) -> None:
    """Fail fast when no node can ever hold one trial (instead of Ray waiting forever).

    A node counts if it is alive now or if the cluster launcher's autoscaler may add it
    (:func:`launchable_node_resources`): a GPU sweep on a cluster whose GPU workers scale from
    zero waits for them instead of failing.

    Raises:
        SweepError: naming the resource, what a trial asks for and the largest node.
    """
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not nodes or os.environ.get("SWEEPLAB_ALLOW_PENDING") == "1":
        return
    nodes += launchable_node_resources()
    fits = [n for n in nodes if n.get("CPU", 0.0) >= spec.resources.cpu and n.get("GPU", 0.0) >= spec.resources.gpu]
    if fits:
        return
    max_cpu = max(n.get("CPU", 0.0) for n in nodes)
    max_gpu = max(n.get("GPU", 0.0) for n in nodes)
    if spec.resources.cpu > max_cpu:
        raise SweepError(f"resources.cpu: a trial asks for {spec.resources.cpu} CPUs but the largest node has "
                         f"{max_cpu:g}; lower resources.cpu (or set SWEEPLAB_ALLOW_PENDING=1 on an autoscaling "
                         "cluster that will add bigger nodes)")
    if spec.resources.gpu > max_gpu:
        raise SweepError(f"resources.gpu: a trial asks for {spec.resources.gpu} GPUs but the largest node has "
                         f"{max_gpu:g}; set resources.gpu: 0 for CPU trials (or SWEEPLAB_ALLOW_PENDING=1 on an "
                         "autoscaling cluster that will add GPU nodes)")
    raise SweepError(f"resources: a trial asks for {spec.resources.cpu:g} CPUs and {spec.resources.gpu:g} GPUs "
                     "together, and no node has both; lower one of them")


def check_storage(storage: str) -> None:
    """A local storage path is only safe on a one-node cluster (since Ray 2.7 results are not
    synced to the head node). A cluster whose autoscaler may add workers
    (:func:`launchable_node_resources`) counts as multi-node even while it has one node.

    Raises:
        SweepError: on a multi-node cluster with a local path.
    """
    import ray

    if storage.startswith("file://"):  # a URI, but of this machine's filesystem
        storage = storage[len("file://"):]
    elif is_uri(storage):
        return
    if os.environ.get("SWEEPLAB_SHARED_FS") == "1":
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if (len(nodes) > 1 or launchable_node_resources()) and not _on_shared_filesystem(storage):
        now = f"the cluster has {len(nodes)} nodes" if len(nodes) > 1 else "the cluster's autoscaler adds nodes"
        raise SweepError(
            f"--storage-path {storage!r} is local to this machine, but {now}: "
            "trials on other nodes could not write their results there. Use s3://bucket/path, gs://..., "
            "or a shared filesystem mounted on every node (then set SWEEPLAB_SHARED_FS=1)")


def _on_shared_filesystem(path: str) -> bool:
    """True if ``path`` lives on a network filesystem (NFS, CIFS, Lustre, ...)."""
    shared = {"nfs", "nfs4", "cifs", "smbfs", "lustre", "gpfs", "beegfs", "fuse.sshfs", "ceph", "glusterfs",
              "fuse.juicefs", "fuse.gcsfuse", "fuse.s3fs", "efs"}
    try:
        best, fstype = "", ""
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and path.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
        return fstype in shared
    except OSError:
        return False
