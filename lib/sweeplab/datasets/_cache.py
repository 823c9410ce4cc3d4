"""A cache of decoded image arrays for the datasets that are slow to decode (JPEG trees).

Decoding 60,000 CIFAR-10 JPEGs or resizing 10,000 CelebA faces takes seconds; the result is
saved once as an uncompressed ``.npz`` under ``<root>/.sweeplab-cache/`` and reused. The file
name carries a hash of the dataset name, the options that shape the arrays, a format version,
the torchvision version (the decoder) and the relative path, size and modification time of every
source file, so any change to a source file or an option makes a new entry (the stale entry of
the same dataset and options is deleted when the new one is written).

A root that cannot be written (read-only mount, no space left) simply goes without a cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

#: Folder under a dataset root that holds the cache files.
CACHE_DIRNAME = ".sweeplab-cache"
#: Bumped whenever the layout of the cached arrays changes, so old entries are never reused.
CACHE_FORMAT = 1


def source_fingerprint(files: Iterable[Path | str], base: Path | str) -> list[tuple[str, int, int]]:
    """The identity of the source files: ``(path relative to base, size in bytes, mtime in ns)``.

    Args:
        files: the files the cached arrays are decoded from, in the order they are used.
        base: folder the reported paths are made relative to.

    Raises:
        OSError: if a file cannot be stat'ed (the caller checks existence first).
    """
    out = []
    prefix = os.path.join(str(base), "")
    for f in files:
        f = str(f)
        st = os.stat(f)
        rel = f[len(prefix):] if f.startswith(prefix) else os.path.relpath(f, prefix)
        out.append((rel, st.st_size, st.st_mtime_ns))
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def cache_path(cache_root: Path, dataset: str, options: dict[str, Any],
               fingerprint: list[tuple[str, int, int]]) -> Path:
    """Path of the cache entry for these options and source files.

    Args:
        cache_root: the dataset root given by the user; entries live in
            ``cache_root/.sweeplab-cache``.
        dataset: registered dataset name, e.g. ``"celeba"``.
        options: the options that determine the cached arrays (JSON-serialisable).
        fingerprint: :func:`source_fingerprint` of the source files.
    """
    import torchvision

    opt_hash = _digest({"dataset": dataset, "options": options})[:10]
    key = _digest({"format": CACHE_FORMAT, "torchvision": torchvision.__version__,
                   "dataset": dataset, "options": options, "files": fingerprint})[:16]
    return cache_root / CACHE_DIRNAME / f"{dataset}-{opt_hash}-{key}.npz"


def _read(path: Path, required: Iterable[str]) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable dataset cache %s (%s); decoding again", path, exc)
        try:
            path.unlink()
        except OSError:
            pass
        return None
    if any(k not in arrays for k in required):
        log.warning("dataset cache %s lacks arrays %s; decoding again", path, list(required))
        return None
    return arrays


def _write(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", suffix=".npz",
                                         delete=False) as fh:
            tmp_name = fh.name
            np.savez(fh, **arrays)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; others sharing the root may read it
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        log.info("dataset cache not written to %s (%s); continuing without it", path.parent, exc)
        return False
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    # Drop the stale entries of the same dataset and options (older source files).
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for old in path.parent.glob(prefix + "*.npz"):
        if old != path:
            try:
                old.unlink()
            except OSError:
                pass
    return True


def cached_arrays(cache_root: Path, dataset: str, options: dict[str, Any],
                  fingerprint: list[tuple[str, int, int]],
                  build: Callable[[], dict[str, np.ndarray]], *,
                  required: Iterable[str] = (), enabled: bool = True,
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return the decoded arrays from the cache, or build them and store them.

    Args:
        cache_root: the dataset root given by the user (the cache goes in its ``.sweeplab-cache``).
        dataset: registered dataset name.
        options: options that determine the arrays (JSON-serialisable).
        fingerprint: :func:`source_fingerprint` of every source file the arrays depend on.
        build: decodes the arrays; called only on a cache miss. Returns name -> array.
        required: array names a cache entry must hold to be used (else it is rebuilt).
        enabled: ``False`` skips the cache entirely (always builds, never writes).

    Returns:
        ``(arrays, info)`` where ``info["cache"]`` is ``"hit"`` (read from the cache),
        ``"stored"`` (decoded and written), ``"unwritable"`` (decoded; the cache folder could not
        be written) or ``"disabled"``, and ``info["cache_file"]`` is the entry's path (or None).

    Raises:
        Whatever ``build`` raises (a :class:`~sweeplab.datasets.base.DatasetError`).
    """
    if not enabled:
        return build(), {"cache": "disabled", "cache_file": None}
    path = cache_path(cache_root, dataset, options, fingerprint)
    arrays = _read(path, required)
    if arrays is not None:
        return arrays, {"cache": "hit", "cache_file": str(path)}
    arrays = build()
    stored = _write(path, arrays)
    return arrays, {"cache": "stored" if stored else "unwritable",
                    "cache_file": str(path) if stored else None}
