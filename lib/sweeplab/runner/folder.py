"""The sweep folder: where it goes, the job file in it, finding it again.

Every sweep folder is Ray Tune's experiment folder plus ``sweeplab_job.yaml``, the validated job
with every override applied and the data root made absolute, so ``sweeplab resume`` and
``sweeplab table`` need nothing else. Nothing here imports Ray at module level (``table`` and
``best`` read sweep folders without it); :func:`has_tuner_state` imports ``ray.tune`` when called.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml

from sweeplab.spec import JobSpec, validate_spec

#: The validated job, saved in every sweep folder.
JOB_FILE = "sweeplab_job.yaml"

#: Seconds sweeplab's own ``gs://`` requests are retried before it reports the storage unreachable.
GCS_RETRY_LIMIT_S = 10.0


class SweepError(RuntimeError):
    """A sweep cannot start or resume; the message says why and what to do."""


def is_uri(path: str) -> bool:
    """True for a filesystem URI (``s3://``, ``gs://``, ``file://``), False for a plain path."""
    return "://" in path


def default_storage_path() -> Path:
    """Where sweeps go when neither ``--storage-path`` nor ``storage_path:`` is given:
    ``$SWEEPLAB_STORAGE``, else ``./sweeps`` (absolute)."""
    return Path(os.environ.get("SWEEPLAB_STORAGE", "sweeps")).expanduser().absolute()


def resolve_storage(spec: JobSpec, override: str | None = None) -> str:
    """The storage path as Ray wants it: an absolute local path or a URI (``s3://``, ``gs://``)."""
    raw = override or spec.storage_path
    if raw is None:
        return str(default_storage_path())
    if is_uri(raw):
        return raw.rstrip("/")
    return str(Path(os.path.expandvars(raw)).expanduser().absolute())


def experiment_path(storage: str, name: str) -> str:
    """The sweep folder: ``<storage>/<name>``.

    Raises:
        SweepError: ``name`` is not one folder name (``run --name a/b`` would nest the sweep
            in a folder its job file cannot name, found only after the sweep ran).
    """
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name in (".", ".."):
        raise SweepError(f"sweep name {name!r} (--name or name:): one folder name of letters, digits, _ . - "
                         "(no / or spaces; not . or ..), e.g. fashion_cnn_lr")
    return _join(storage, name)


def _join(storage: str, name: str) -> str:
    return f"{storage}/{name}" if is_uri(storage) else str(Path(storage) / name)


def locate_sweep(name_or_path: str, storage_path: str | None = None) -> str:
    """Find a sweep folder from a path, a URI, or a name under the storage path.

    Raises:
        SweepError: nothing there holds a sweep.
    """
    if is_uri(name_or_path):
        return name_or_path.rstrip("/")
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return str(p.absolute())
    storage = storage_path or str(default_storage_path())
    candidate = _join(storage if is_uri(storage) else str(Path(storage).expanduser().absolute()), name_or_path)
    if is_uri(candidate) or Path(candidate).is_dir():
        return candidate
    if p.is_file():
        raise SweepError(f"{p}: is a file, not a sweep folder (a job file runs with `sweeplab run {p}`); give the "
                         "folder that `sweeplab run` printed")
    raise SweepError(f"no sweep named {name_or_path!r}: {candidate} does not exist; give the sweep's folder "
                     "or pass --storage-path where it was written")


def has_tuner_state(path: str) -> bool:
    """True if the sweep folder holds the state ``Tuner.restore`` needs (Ray Tune's public
    ``Tuner.can_restore``; local paths and URIs alike). Imports ``ray.tune``: on a local Ray,
    call :func:`~sweeplab.runner.cluster.prefer_loopback` first.

    Raises:
        SweepError: the folder cannot be read (:func:`storage_error`: an unreachable bucket, ...),
            or a local one cannot be created (a path through a file, a folder not writable).
    """
    from ray import tune

    try:
        if not is_uri(path):
            _check_creatable(Path(path))
        elif path.startswith("gs://"):  # Ray's own gs:// client retries for minutes: look once, bounded
            fs, p = uri_filesystem(path)
            fs.get_file_info(p)
        return tune.Tuner.can_restore(path)
    except _io_errors() as exc:  # an unreachable bucket, no credentials, a folder we may not read
        raise storage_error(path, exc) from None


def _check_creatable(path: Path) -> None:
    """A local sweep folder exists or can be made: its nearest existing ancestor is a folder
    in which a folder can be made (checked before anything reads data or starts Ray; nothing is
    left behind).

    Raises:
        SweepError: naming the path and the ancestor that is a file or not writable.
    """
    there = path.absolute()
    while not there.exists() and there != there.parent:
        there = there.parent
    if there == path.absolute() and there.is_dir():
        return
    if not there.is_dir():
        raise SweepError(f"{path}: cannot be a sweep folder: {there} is a file, not a folder; "
                         "fix --storage-path (or storage_path:, $SWEEPLAB_STORAGE)")
    try:  # a real probe (permissions, read-only mounts, /proc): make a folder there and remove it
        os.rmdir(tempfile.mkdtemp(prefix=".sweeplab-probe-", dir=there))
    except OSError as exc:
        raise SweepError(f"{path}: cannot create the sweep folder in {there}: {exc.strerror or exc}; "
                         "fix --storage-path (or storage_path:, $SWEEPLAB_STORAGE)") from None


def uri_filesystem(uri: str):
    """``pyarrow.fs.FileSystem.from_uri(uri)``: the filesystem and the path inside it. A ``gs://``
    client gives up after :data:`GCS_RETRY_LIMIT_S` seconds (its default retries an unreachable
    Google Cloud Storage for minutes)."""
    import pyarrow.fs as pafs

    if uri.startswith("gs://") and "?" not in uri:
        return pafs.FileSystem.from_uri(f"{uri}?retry_limit_seconds={GCS_RETRY_LIMIT_S:g}")
    return pafs.FileSystem.from_uri(uri)


def _io_errors() -> tuple[type[Exception], ...]:
    """What reading or writing a sweep folder raises: ``OSError``, and for a URI pyarrow's own
    ``ArrowException`` (the ``gs://`` client's credentials failures are one, not an ``OSError``)."""
    import pyarrow.lib

    return (OSError, pyarrow.lib.ArrowException)


def storage_error(path: str, exc: Exception) -> SweepError:
    """The one-line error for a sweep folder that cannot be read or written: the path or URI,
    the first line of the underlying error (pyarrow's for ``s3://``/``gs://``), and what to check."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = first if len(first) <= 300 else first[:299] + "…"  # google-cloud-cpp's are whole paragraphs
    if is_uri(path):
        return SweepError(f"{path}: cannot reach the storage: {first}; check the bucket's name, your "
                          "credentials and the network (or use a local --storage-path)")
    return SweepError(f"{path}: cannot read or write the sweep folder: {first}")


def save_job(spec: JobSpec, path: str) -> None:
    """Write the validated job (data root absolute) into the sweep folder."""
    dumped = spec.model_dump(mode="json")
    root = spec.data.resolved_root()
    if root is not None:
        dumped["data"]["root"] = str(root)
    write_file(path, JOB_FILE, yaml.safe_dump(dumped, sort_keys=False))


def write_file(path: str, name: str, text: str) -> None:
    """Write ``text`` as file ``name`` of the sweep folder ``path`` (a local path, written to a
    temporary file and renamed so a reader never sees half of it, or an ``s3://``/``gs://`` URI
    through ``pyarrow.fs``), creating the folder.

    Raises:
        SweepError: the storage cannot be reached or written (:func:`storage_error`).
    """
    if is_uri(path):
        try:
            fs, p = uri_filesystem(path)
            fs.create_dir(p, recursive=True)
            with fs.open_output_stream(f"{p}/{name}") as fh:
                fh.write(text.encode())
        except _io_errors() as exc:
            raise storage_error(path, exc) from None
    else:
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            tmp = Path(path) / (name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, Path(path) / name)
        except OSError as exc:
            raise storage_error(path, exc) from None


def _read_job_yaml(path: str):
    if is_uri(path):
        fs, p = uri_filesystem(path)
        with fs.open_input_stream(f"{p}/{JOB_FILE}") as fh:
            return yaml.safe_load(fh.read().decode())
    return yaml.safe_load((Path(path) / JOB_FILE).read_text())


def _sweeps_inside(path: str) -> list[str]:
    """Names of the sweep folders directly inside a local folder (sorted); [] for a URI."""
    if is_uri(path) or not Path(path).is_dir():
        return []
    return sorted(p.name for p in Path(path).iterdir() if (p / JOB_FILE).is_file())


def _no_job_error(path: str, exc: Exception) -> SweepError:
    """The error for a sweep folder whose job file cannot be read: no such file (naming the
    sweeps inside when ``path`` is the storage folder itself), or the storage's own error."""
    if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return storage_error(path, exc)
    inside = _sweeps_inside(path)
    if inside:  # the storage path itself, given instead of one of its sweeps
        shown = ", ".join(inside[:5]) + (f" and {len(inside) - 5} more" if len(inside) > 5 else "")
        return SweepError(f"{path}: holds no sweeplab sweep itself but the sweep{'s' * (len(inside) > 1)} "
                          f"{shown}; give one of them, e.g. {Path(path) / inside[0]}")
    return SweepError(f"{path}: holds no sweeplab sweep (no {JOB_FILE}); give the folder that "
                      "`sweeplab run` printed, or the sweep's name with --storage-path")


def read_job(path: str, *, check_data: bool = False) -> JobSpec:
    """The job saved in a sweep folder.

    Args:
        path: the sweep folder (local path or ``s3://``/``gs://`` URI).
        check_data: also check that the job's dataset root exists here (needed to resume,
            not to read results).

    Raises:
        SweepError: if the folder holds no sweeplab sweep or its job file is corrupt, or the
            storage cannot be reached (:func:`storage_error`: the URI and the underlying error).
        SpecError: the saved job no longer validates (e.g. its data root is gone), naming the
            job file and the field.
    """
    try:
        raw = _read_job_yaml(path)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path}/{JOB_FILE}: corrupt ({str(exc).splitlines()[0]}); restore it from the job "
                         "file the sweep was started with (sweeplab validate JOB.yaml shows the same fields)") from None
    except Exception as exc:  # noqa: BLE001 (pyarrow's errors are imported only when one is raised)
        if not isinstance(exc, _io_errors()):
            raise
        raise _no_job_error(path, exc) from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}/{JOB_FILE}: corrupt (not a mapping of job fields); restore it from the job "
                         "file the sweep was started with")
    return validate_spec(raw, source=f"{path}/{JOB_FILE}", check_data=check_data)
