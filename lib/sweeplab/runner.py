"""From a validated :class:`~sweeplab.spec.JobSpec` to a Ray Tune ``Tuner`` run, and back (resume).

The dataset is read once here, in the driver, and handed to every trial through Ray's object
store (``tune.with_parameters``). Searchers: Optuna (TPE, random, CMA-ES) through Ray Tune's
``OptunaSearch`` with a define-by-run space (so conditional parameters work), Ray Tune's own
``PointsSearcher`` for grids; ``Repeater`` runs each Optuna configuration with several
seeds. Scheduling: ``ASHAScheduler``. Logging: Ray Tune's CSV/JSON loggers plus
:class:`~sweeplab.tensorboard.HParamsLoggerCallback`.

Every sweep folder holds ``sweeplab_job.yaml``, the validated job with every override applied
and the data root made absolute, so ``sweeplab resume`` and ``sweeplab table`` need nothing else.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from sweeplab.spec import CategoricalParam, FloatParam, IntParam, JobSpec, SpecError, validate_spec

logger = logging.getLogger(__name__)

#: The validated job, saved in every sweep folder.
JOB_FILE = "sweeplab_job.yaml"


class SweepError(RuntimeError):
    """A sweep cannot start or resume; the message says why and what to do."""


def default_storage_path() -> Path:
    """Where sweeps go when neither ``--storage-path`` nor ``storage_path:`` is given:
    ``$SWEEPLAB_STORAGE``, else ``./sweeps`` (absolute)."""
    return Path(os.environ.get("SWEEPLAB_STORAGE", "sweeps")).expanduser().absolute()


def _is_uri(path: str) -> bool:
    return "://" in path


def resolve_storage(spec: JobSpec, override: str | None = None) -> str:
    """The storage path as Ray wants it: an absolute local path or a URI (``s3://``, ``gs://``)."""
    raw = override or spec.storage_path
    if raw is None:
        return str(default_storage_path())
    if _is_uri(raw):
        return raw.rstrip("/")
    return str(Path(os.path.expandvars(raw)).expanduser().absolute())


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def prepare_data(spec: JobSpec):
    """Read the job's dataset once and cut it as ``data:`` says (subset, validation split).

    Returns:
        The :class:`~sweeplab.datasets.base.DataBundle` every trial receives.

    Raises:
        DatasetError: unreadable data; SpecError: data the family cannot use.
    """
    from sweeplab.datasets.base import load_dataset

    d = spec.data
    bundle = load_dataset(d.name, d.resolved_root(), download=d.download, options=d.options)
    bundle = bundle.subset(d.train_fraction, d.test_fraction, seed=d.subset_seed)
    if d.val_fraction > 0 and bundle.x_val is None:
        bundle = bundle.split_validation(d.val_fraction, seed=d.subset_seed)
    try:
        spec.family().check_data(bundle, spec.family_config())
    except ValueError as exc:
        raise SpecError(f"data: {spec.trainable} cannot use dataset {d.name!r}: {exc}") from None
    return bundle


# ------------------------------------------------------------------------------------------------
# Search
# ------------------------------------------------------------------------------------------------
class DefineByRunSpace:
    """The search space as an Optuna define-by-run function (picklable, so resumable).

    A conditional parameter is suggested only when its ``when`` condition holds for the values
    suggested before it.
    """

    def __init__(self, space: dict[str, Any]) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        from sweeplab.spec import _condition_holds

        values: dict[str, Any] = {}
        for name, p in self.space.items():
            if not _condition_holds(p.when, values):
                continue
            if isinstance(p, FloatParam):
                values[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
            elif isinstance(p, IntParam):
                values[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            elif isinstance(p, CategoricalParam):
                values[name] = trial.suggest_categorical(name, p.values)
        return None


def build_search(spec: JobSpec):
    """The search algorithm and the number of trials for a job.

    Returns:
        ``(search_alg, num_trials)``.
    """
    from ray.tune.search import Repeater

    from sweeplab.searchers import PointsSearcher

    s = spec.search
    if s.sampler == "grid":
        # a repeat's seed goes into its point, so Ray's params.json shows the seed the trial ran with
        # (a sampler's repeats get theirs from Ray's __trial_index__, added in run_trial)
        base_seed = int(spec.train.get("seed", 0) or 0)
        points = [{**p, "seed": int(p.get("seed", base_seed) or 0) + r}
                  for p in s.grid_points() for r in range(spec.repeats)]
        return PointsSearcher(points), len(points)

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if s.sampler == "tpe":
        startup = min(10, max(3, s.num_samples // 3))
        import warnings

        with warnings.catch_warnings():  # multivariate/group TPE are marked experimental by Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup, multivariate=True,
                                                 group=True)
    elif s.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    else:
        sampler = optuna.samplers.CmaEsSampler(seed=s.seed, warn_independent_sampling=False)
    alg = OptunaSearch(space=DefineByRunSpace(dict(s.space)), metric=spec.metric,
                       mode=spec.resolved_mode(), sampler=sampler)
    if spec.repeats > 1:
        alg = Repeater(alg, repeat=spec.repeats, set_index=True)
    return alg, s.num_samples * spec.repeats


def build_scheduler(spec: JobSpec):
    """ASHA as the job says, or None (Ray's FIFO)."""
    if spec.scheduler.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=spec.max_iterations(),
                         grace_period=spec.scheduler.grace_period,
                         reduction_factor=spec.scheduler.reduction_factor)


# ------------------------------------------------------------------------------------------------
# Tuner
# ------------------------------------------------------------------------------------------------
def fault_injection(warn: bool = False) -> str:
    """The driver's ``SWEEPLAB_FAULT_INJECT`` (testing only), checked; every trial receives it.
    ``warn`` logs a warning when it is set.

    Raises:
        SweepError: a malformed rule.
    """
    from sweeplab.trainables.base import FAULT_ENV, parse_fault_rules

    faults = os.environ.get(FAULT_ENV, "")
    try:
        parse_fault_rules(faults)
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    if faults and warn:
        logger.warning("%s=%s: injecting faults into matching trials", FAULT_ENV, faults)
    return faults


def make_trainable(spec: JobSpec, data: Any, exp_path: str | None = None):
    """The shared trial loop bound to this job's family, data (via the object store) and
    per-trial resources. ``exp_path``: the sweep folder, where trials write their TensorBoard
    images directly when it is a local (or shared) path."""
    from ray import tune

    from sweeplab.trainables.base import run_trial

    settings = {"cpus": spec.resources.cpu, "checkpoint_every": spec.checkpoint.every,
                "media_every": spec.logging.media_every, "fault_inject": fault_injection(),
                "experiment_dir": None if exp_path is None or _is_uri(exp_path) else exp_path}
    fn = tune.with_parameters(run_trial, data=data, family=spec.trainable, settings=settings)
    return tune.with_resources(fn, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _callbacks(spec: JobSpec) -> list[Any]:
    from sweeplab.tensorboard import HParamsLoggerCallback

    params = list(spec.search.space) + sorted({k for v in spec.search.variants for k in v if k != "name"})
    return [HParamsLoggerCallback(params, list(spec.family().metrics))]


def _trial_name(trial: Any) -> str:
    """Short trial folder names (``trial_<id>``); the parameters are in params.json and the tables."""
    return f"trial_{trial.trial_id}"


def prefer_loopback(address: str | None) -> None:
    """A local Ray (no ``address``) binds to 127.0.0.1 instead of the machine's network address:
    nothing outside this machine needs to reach it. Must run before ``ray`` is first imported
    (Ray reads the switch at import); a cluster driver (``address`` given) is left alone."""
    import sys

    if address is None and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def init_ray(address: str | None = None, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Start (or attach to) Ray once per process.

    Args:
        address: ``None`` starts a local Ray; ``"auto"`` or ``host:port`` attaches to a cluster.
        num_cpus: CPUs of the local Ray (default: all of this machine's).
        dashboard: start Ray's dashboard with a local Ray (off by default: faster start-up).
    """
    import ray

    # Ray's warning about frequent experiment snapshots is expected with per-epoch checkpoints.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as exc:
            auth = "auth" in str(exc).lower() or "token" in str(exc).lower()
            hint = ("the cluster uses token authentication: export RAY_AUTH_MODE=token and make its token "
                    "available (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN; `ray get-auth-token` "
                    "on the head prints it)") if auth else \
                ("start the cluster first (`ray up cluster.yaml`, or `ray start --head` on the head node) "
                 "and pass its address: --address auto on a cluster node, else --address HEAD_IP:6379")
            raise SweepError(f"--address {address}: cannot connect to a Ray cluster; {hint}") from None
    else:
        # Ray starts workers at nice 15, so trials lose the CPU to any other busy process
        # (measured: epochs 2.4x slower inside a sweep than bare on a loaded 2-core machine).
        # The trials are the work here: run them at the driver's priority unless told otherwise.
        os.environ.setdefault("RAY_worker_niceness", "0")
        # address="local": always a fresh Ray of our own; without it ray.init() attaches to the
        # latest cluster that `ray start` left on this machine (/tmp/ray/ray_current_cluster).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
                 logging_level=logging.WARNING)


#: The autoscaling config the cluster launcher leaves on the head node (``ray up``).
AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"


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
    elif _is_uri(storage):
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


def experiment_path(storage: str, name: str) -> str:
    """The sweep folder: ``<storage>/<name>``."""
    return f"{storage}/{name}" if _is_uri(storage) else str(Path(storage) / name)


def save_job(spec: JobSpec, path: str) -> None:
    """Write the validated job (data root absolute) into the sweep folder."""
    dumped = spec.model_dump(mode="json")
    root = spec.data.resolved_root()
    if root is not None:
        dumped["data"]["root"] = str(root)
    text = yaml.safe_dump(dumped, sort_keys=False)
    if _is_uri(path):
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path)
        fs.create_dir(p, recursive=True)
        with fs.open_output_stream(f"{p}/{JOB_FILE}") as fh:
            fh.write(text.encode())
    else:
        Path(path).mkdir(parents=True, exist_ok=True)
        tmp = Path(path) / (JOB_FILE + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, Path(path) / JOB_FILE)


def read_job(path: str, *, check_data: bool = False) -> JobSpec:
    """The job saved in a sweep folder.

    Args:
        path: the sweep folder (local path or ``s3://``/``gs://`` URI).
        check_data: also check that the job's dataset root exists here (needed to resume,
            not to read results).

    Raises:
        SweepError: if the folder holds no sweeplab sweep or its job file is corrupt.
        SpecError: the saved job no longer validates (e.g. its data root is gone), naming the
            job file and the field.
    """
    try:
        if _is_uri(path):
            import pyarrow.fs as pafs

            fs, p = pafs.FileSystem.from_uri(path)
            with fs.open_input_stream(f"{p}/{JOB_FILE}") as fh:
                raw = yaml.safe_load(fh.read().decode())
        else:
            raw = yaml.safe_load((Path(path) / JOB_FILE).read_text())
    except (FileNotFoundError, OSError):
        raise SweepError(f"{path}: holds no sweeplab sweep (no {JOB_FILE}); give the folder that "
                         "`sweeplab run` printed, or the sweep's name with --storage-path") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}/{JOB_FILE}: corrupt ({str(exc).splitlines()[0]}); restore it from the job "
                         "file the sweep was started with (sweeplab validate JOB.yaml shows the same fields)") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}/{JOB_FILE}: corrupt (not a mapping of job fields); restore it from the job "
                         "file the sweep was started with")
    return validate_spec(raw, source=f"{path}/{JOB_FILE}", check_data=check_data)


def _has_tuner_state(path: str) -> bool:
    if _is_uri(path):
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path)
        return fs.get_file_info(f"{p}/tuner.pkl").type != pafs.FileType.NotFound
    return (Path(path) / "tuner.pkl").exists()


def run_sweep(spec: JobSpec, *, address: str | None = None, storage_path: str | None = None,
              name: str | None = None, num_cpus: int | None = None, dashboard: bool = False,
              verbose: int = 1):
    """Run a job as a Ray Tune sweep and return ``(experiment_path, ResultGrid)``.

    Args:
        spec: the validated job.
        address: attach to this Ray cluster (``"auto"``, ``"host:6379"``) instead of a local Ray.
        storage_path: where the sweep folder goes (local path, ``s3://``, ``gs://``).
        name: the sweep's folder name (default: ``spec.name``).
        num_cpus: CPUs of a local Ray (default: all).
        dashboard: start Ray's dashboard with a local Ray.
        verbose: Ray Tune's progress verbosity (0 silent, 1 default, 2 per result).

    Raises:
        SweepError: the folder already holds a sweep, or resources/storage cannot work.
        DatasetError: unreadable data.
    """
    prefer_loopback(address)
    from ray import tune

    name = name or spec.name or "sweep"
    spec = spec.model_copy(update={"name": name})
    storage = resolve_storage(spec, storage_path)
    exp_path = experiment_path(storage, name)
    if _has_tuner_state(exp_path):
        raise SweepError(f"{exp_path} already holds a sweep; continue it with `sweeplab resume {exp_path}` "
                         "or start another with --name")
    search_alg, num_trials = build_search(spec)  # before Ray starts and before any file is written
    scheduler = build_scheduler(spec)
    data = prepare_data(spec)  # before Ray starts: bad data fails fast
    fault_injection(warn=True)
    init_ray(address, num_cpus, dashboard)
    check_resources(spec)
    if address:
        check_storage(storage)
    save_job(spec, exp_path)
    tuner = tune.Tuner(
        make_trainable(spec, data, exp_path),
        param_space=dict(spec.train),
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.resolved_mode(), search_alg=search_alg,
            scheduler=scheduler, num_samples=num_trials,
            max_concurrent_trials=spec.search.max_concurrent, time_budget_s=spec.search.time_budget_s,
            reuse_actors=True, trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=verbose,
            # with s3:// or gs:// storage, images written in the trial's working dir are uploaded
            sync_config=tune.SyncConfig(sync_artifacts=_is_uri(storage)),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint.keep),
            failure_config=tune.FailureConfig(max_failures=spec.failure.max_failures),
            callbacks=_callbacks(spec)),
    )
    results = tuner.fit()
    record_lost_errors(exp_path, results)
    return exp_path, results


def _edit_experiment_state(exp_path: str, edit, *, backup: bool = False) -> list[str]:
    """Load a sweep's newest ``experiment_state-*.json`` (Ray Tune's record of every trial's
    status and checkpoint, the file ``Tuner.restore`` reads), let ``edit(state, fs, root)`` change
    its ``trial_data`` in place, and write it back when ``edit`` reports a change.

    Args:
        exp_path: the sweep folder (local path or URI).
        edit: called with the parsed state, the folder's ``pyarrow.fs`` filesystem and its path
            there; returns one line per change (empty: nothing is written).
        backup: keep Ray's file beside the edited one as ``*.json.before-repair`` (a name
            ``Tuner.restore`` does not read).

    Returns:
        What ``edit`` returned ([] when the sweep has no state yet).
    """
    import json

    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(exp_path if _is_uri(exp_path) else str(Path(exp_path).absolute()))
    states = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(root))
                    if Path(i.path).name.startswith("experiment_state-") and i.path.endswith(".json"))
    if not states:
        return []
    with fs.open_input_stream(states[-1]) as fh:
        original = fh.read()
    state = json.loads(original.decode())
    changes = edit(state, fs, root)
    if changes:
        if backup:
            with fs.open_output_stream(states[-1] + ".before-repair") as fh:
                fh.write(original)
        with fs.open_output_stream(states[-1]) as fh:
            fh.write(json.dumps(state).encode())
    return changes


def record_lost_errors(exp_path: str, results: Any) -> list[str]:
    """Save the ERROR status of trials whose worker process died, which Ray Tune loses.

    Ray Tune (2.60) drops the trial's actor before it processes the failed task, and then
    skips re-saving that trial's state: a trial whose process was killed (OOM killer, a crash,
    ``os._exit``) stays RUNNING in ``experiment_state-*.json`` although the fit reported its
    error. Tables would show it ``unfinished`` and ``best_config`` could pick its partial
    results. This marks each such trial ERROR (with its failure count and error file) in the
    saved state, from the :class:`~ray.tune.ResultGrid` of the finished fit.

    Args:
        exp_path: the sweep folder (local path or URI).
        results: the ``ResultGrid`` that ``Tuner.fit()`` returned.

    Returns:
        The ids of the trials repaired.
    """
    import json

    import pyarrow.fs as pafs

    errored = {}
    for result in results:
        if result.error is not None and result.path:
            trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")
            errored[trial_id] = Path(result.path).name
    if not errored:
        return []
    def mark_errored(state: dict, fs: pafs.FileSystem, root: str) -> list[str]:
        repaired = []
        for entry in state["trial_data"]:
            trial, meta = json.loads(entry[0]), json.loads(entry[1])
            if trial.get("trial_id") in errored and trial.get("status") not in ("ERROR", "TERMINATED"):
                trial["status"] = "ERROR"
                meta["num_failures"] = max(int(meta.get("num_failures") or 0), int(trial.get("max_failures") or 0) + 1)
                error_file = f"{root}/{errored[trial['trial_id']]}/error.txt"
                if fs.get_file_info(error_file).type != pafs.FileType.NotFound:
                    meta["error_filename"] = "error.txt"
                entry[0], entry[1] = json.dumps(trial), json.dumps(meta)
                repaired.append(trial["trial_id"])
        return repaired

    try:
        repaired = _edit_experiment_state(exp_path, mark_errored)
        if repaired:
            logger.warning("trial(s) %s died (worker process killed); saved them as errored", ", ".join(repaired))
        return repaired
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:  # an unexpected state format
        logger.warning("could not check the saved trial states for lost errors: %s", exc)
        return []


def locate_sweep(name_or_path: str, storage_path: str | None = None) -> str:
    """Find a sweep folder from a path, a URI, or a name under the storage path.

    Raises:
        SweepError: nothing there holds a sweep.
    """
    if _is_uri(name_or_path):
        return name_or_path.rstrip("/")
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return str(p.absolute())
    storage = storage_path or str(default_storage_path())
    candidate = experiment_path(storage if _is_uri(storage) else str(Path(storage).expanduser().absolute()),
                                name_or_path)
    if _is_uri(candidate) or Path(candidate).is_dir():
        return candidate
    raise SweepError(f"no sweep named {name_or_path!r}: {candidate} does not exist; give the sweep's folder "
                     "or pass --storage-path where it was written")


def repair_stale_checkpoints(exp_dir: Path) -> list[str]:
    """Point trials whose recorded checkpoint is gone at their newest checkpoint on disk.

    Ray Tune deletes a trial's older checkpoints (``checkpoint.keep``) when it registers a new
    one and saves its experiment state (which says what each trial resumes from) a moment later.
    A driver killed between the two leaves a state that names a deleted checkpoint, and
    ``Tuner.restore`` then errors that trial ("does not exist on storage anymore"). The newer
    checkpoint is on disk, and ``result.json`` holds the result it was reported with: this
    rewrites the newest ``experiment_state-*.json`` so the trial resumes from it, with Ray's
    iteration count and next checkpoint index to match (Ray's file is kept as
    ``*.json.before-repair``). Uses Ray Tune's own (internal) classes to read and write the
    state; on any surprise it changes nothing.

    Args:
        exp_dir: a local experiment folder.

    Returns:
        One line per repaired trial (empty when nothing needed it).
    """
    import json

    def repoint(state: dict, fs: Any, root: str) -> list[str]:
        from ray.train._internal.session import _TrainingResult
        from ray.tune import Checkpoint
        from ray.tune.experiment.trial import Trial

        notes = []
        for i, (trial_json, meta_json) in enumerate(state["trial_data"]):
            # a stub: the trainable need not be registered in this process (it is not, yet)
            trial = Trial.from_json_state(trial_json, stub=True)
            trial.restore_run_metadata(meta_json)
            manager = trial.run_metadata.checkpoint_manager
            latest = manager.latest_checkpoint_result
            trial_dir = Path(root) / trial.storage.trial_dir_name
            if latest is None or (trial_dir / Path(latest.checkpoint.path).name).is_dir():
                continue
            rows = {}
            results = trial_dir / "result.json"
            for line in (results.read_text().splitlines() if results.exists() else []):
                row = json.loads(line)
                if row.get("checkpoint_dir_name"):
                    rows[row["checkpoint_dir_name"]] = row
            on_disk = sorted(d.name for d in trial_dir.glob("checkpoint_*") if d.is_dir() and d.name in rows)
            if not on_disk:
                continue
            newest = on_disk[-1]
            result = _TrainingResult(
                checkpoint=Checkpoint(str(Path(latest.checkpoint.path).with_name(newest)),
                                      filesystem=latest.checkpoint.filesystem),
                metrics=rows[newest])
            manager._latest_checkpoint_result = result
            manager._checkpoint_results = [result]
            trial.storage.current_checkpoint_index = max(trial.storage.current_checkpoint_index,
                                                         int(newest.rsplit("_", 1)[1]) + 1)
            trial.stub = False
            trial.invalidate_json_state()
            state["trial_data"][i] = list(trial.get_json_state())
            notes.append(f"trial {trial.trial_id}: Ray's saved state named "
                         f"{Path(latest.checkpoint.path).name}, deleted after a newer one was written "
                         f"(the driver stopped in between); resuming from {newest} (iteration "
                         f"{rows[newest].get('training_iteration')})")
        return notes

    try:
        return _edit_experiment_state(str(exp_dir), repoint, backup=True)
    except Exception as exc:  # noqa: BLE001 - Ray internals moved: leave the state as Ray wrote it
        logger.debug("checkpoint repair skipped: %s", exc)
        return []


def ray_temp_root() -> Path | None:
    """The folder holding this machine's Ray session folders (``/tmp/ray`` by default), read from
    the running Ray (call after :func:`init_ray`); ``None`` when Ray is not running here."""
    try:
        import ray

        return Path(ray._private.worker._global_node.get_session_dir_path()).parent
    except Exception:  # noqa: BLE001 - not initialised, or Ray's internals moved
        return None


_APPEND_ONLY = ("result.json", "progress.csv")  # Ray Tune's per-trial logs, one line per result


def _trusted_staged_bytes(src: Path) -> bytes | None:
    """What of a file in a killed driver's staging folder can be used: the complete lines of a
    per-trial log (the driver may have died writing the last one), a JSON file only if it parses
    (Ray writes its experiment state in place), anything else as it is; ``None``: nothing."""
    import json

    data = src.read_bytes()
    if src.name in _APPEND_ONLY:
        return data[: data.rfind(b"\n") + 1]
    if src.suffix == ".json":
        try:
            json.loads(data)
        except ValueError:
            return None
    return data


def recover_driver_artifacts(exp_dir: Path, temp_root: Path | None = None) -> list[str]:
    """Copy into a local sweep folder what its killed driver wrote but never synced there.

    Ray Tune's driver writes each trial's ``result.json``, ``progress.csv`` and TensorBoard
    events, and its experiment state, into a staging folder of its Ray session
    (``<temp_root>/session_*/artifacts/<time>/<sweep name>/driver_artifacts``) and copies that
    folder to the sweep folder every few seconds, while trials write their checkpoints straight
    into the sweep folder. A driver killed between two copies leaves the sweep folder with
    results (and a state) older than the checkpoints beside them, and one killed during a copy
    leaves files cut short; the staging folder, which outlives the driver on its machine, holds
    the rest. From each staging folder of this sweep, oldest first, this takes:

    * the per-trial logs and TensorBoard event files (they only grow) where the sweep folder's
      copy is missing or a strict beginning of the staged one, up to the staged log's last
      complete line;
    * any other file where the sweep folder's copy is missing, cut short, or older (a copy Ray
      made is newer than what it copied, so only what changed after the last copy counts), a JSON
      file only if it parses.

    Files edited in the sweep folder after the driver stopped (by a resume, or
    :func:`record_lost_errors`) are newer, and are kept; so is a saved state where the staged one
    was cut short by the kill.

    A staging folder counts as this sweep's when it has the sweep's name and at least one trial
    folder the sweep folder also has (trial ids are random). Temporary files (``.*``) are skipped.

    Args:
        exp_dir: a local sweep folder.
        temp_root: Ray's temp folder (default: :func:`ray_temp_root`).

    Returns:
        One line per staging folder something was copied from (empty when nothing was behind).
    """
    exp_dir = Path(exp_dir)
    temp_root = temp_root or ray_temp_root()
    if temp_root is None or not exp_dir.is_dir():
        return []
    own_trials = {p.name for p in exp_dir.glob("trial_*") if p.is_dir()}
    # resolved: Ray's session_latest is a link to one of the session folders
    stagings = {d.resolve() for d in temp_root.glob(f"session_*/artifacts/*/{exp_dir.name}/driver_artifacts")
                if d.is_dir() and own_trials & {p.name for p in d.glob("trial_*")}}
    notes = []
    for staging in sorted(stagings, key=lambda d: max((f.stat().st_mtime for f in d.rglob("*")), default=0)):
        copied = []
        for src in sorted(staging.rglob("*")):
            if not src.is_file() or src.name.startswith("."):
                continue
            dst = exp_dir / src.relative_to(staging)
            try:
                data = _trusted_staged_bytes(src)
                if data is None:
                    continue
                if dst.exists():
                    old = dst.read_bytes()
                    cut_short = len(old) < len(data) and data.startswith(old)
                    grows = src.name in _APPEND_ONLY or src.name.startswith("events.out.tfevents")
                    if not cut_short and (grows or old == data or dst.stat().st_mtime >= src.stat().st_mtime):
                        continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(data)
                stamp = src.stat().st_mtime
                os.utime(dst, (stamp, stamp))  # as Ray's own copy: no longer older than the staged file
            except OSError as exc:  # unreadable or unwritable: the resume goes on with what is there
                logger.warning("could not recover %s from %s: %s", dst.relative_to(exp_dir), staging, exc)
                continue
            copied.append(str(src.relative_to(staging)))
        if copied:
            notes.append(f"recovered {len(copied)} file(s) the stopped driver had not yet copied into the sweep "
                         f"folder, from {staging}: {', '.join(copied[:6])}{' ...' if len(copied) > 6 else ''}")
    return notes


def resume_sweep(name_or_path: str, *, storage_path: str | None = None, address: str | None = None,
                 num_cpus: int | None = None, dashboard: bool = False, restart_errored: bool = False):
    """Continue an interrupted sweep (Ctrl-C, killed driver, lost node).

    Finished trials are kept as they are; unfinished ones continue from their last checkpoint;
    errored ones are resumed from their checkpoint (or restarted with ``restart_errored``).
    For a local sweep folder, results a killed driver recorded but had not yet copied there are
    recovered first (:func:`recover_driver_artifacts`), and a saved state naming a deleted
    checkpoint is repaired (:func:`repair_stale_checkpoints`).

    Returns:
        ``(experiment_path, ResultGrid)``.

    Raises:
        SweepError: the path holds no sweep.
    """
    prefer_loopback(address)
    from ray import tune

    exp_path = locate_sweep(name_or_path, storage_path)
    read_job(exp_path)  # a sweep folder at all?
    if not _has_tuner_state(exp_path):
        raise SweepError(f"{exp_path}: the sweep never started (no tuner.pkl); run it again with `sweeplab run`")
    spec = read_job(exp_path, check_data=True)  # resuming needs the data where the job says
    data = prepare_data(spec)
    fault_injection(warn=True)
    init_ray(address, num_cpus, dashboard)
    check_resources(spec)
    if address:
        check_storage(exp_path)
    if not _is_uri(exp_path):
        # first what a killed driver staged but never copied here, then a state that names a
        # checkpoint deleted after it was saved
        for note in recover_driver_artifacts(Path(exp_path)) + repair_stale_checkpoints(Path(exp_path)):
            logger.warning(note)
    tuner = tune.Tuner.restore(exp_path, trainable=make_trainable(spec, data, exp_path),
                               resume_unfinished=True, resume_errored=not restart_errored,
                               restart_errored=restart_errored)
    results = tuner.fit()
    record_lost_errors(exp_path, results)
    return exp_path, results
