"""The Optuna study behind a sweep, kept in storage so it can be watched live and outlives the run.

Where it lives:

* **embedded** (default, local sweep folders): Optuna's journal storage,
  ``JournalStorage(JournalFileBackend(<sweep>/optuna_journal.log))``. Chosen over SQLite because
  the journal is an append-only log written under a lock file (``JournalFileSymlinkLock``) that
  works on NFS, so a dashboard (or a second reader on another machine) can read while the
  driver writes; SQLite's locking is unreliable on NFS and a reader can hold its write lock.
  Only the Ray driver writes (the searcher runs there), so one writer, many readers.
* ``search.storage: <SQLAlchemy URL>`` (``postgresql://user@host:5432/db``, ...): Optuna's
  ``RDBStorage``, for clusters and s3/gs sweep folders.
* s3/gs sweep folders without ``search.storage``: in memory, as before (Ray pickles it into
  its searcher state; nothing to watch live).

The study is named ``<sweep name>-<8 hex digits>`` and recorded in ``<sweep>/optuna_study.json``
(:data:`STUDY_FILE`), which ``sweeplab dashboard`` reads. Ray pickles the searcher (with the
study and its storage) into its searcher state and ``tuner.pkl``; the embedded storage pickles
as its folder only and is reopened on unpickling (at the folder :func:`prepare_resume` names, if
the sweep folder was moved), Optuna's ``RDBStorage`` as its URL. So ``sweeplab resume`` carries
on with the same study and trial numbering.

Grids (``sampler: grid``) have no study: nothing is sampled, the configurations are fixed.
With ``repeats``, each Optuna trial is one configuration and its value the mean over the
repeats (Ray's ``Repeater`` reports the mean to the searcher).
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage

from sweeplab.runner.folder import SweepError, is_uri, write_file

#: The sweep folder's record of its study: ``{"study_name", "storage", "folder"}``.
STUDY_FILE = "optuna_study.json"
#: The embedded study storage, in the sweep folder.
JOURNAL_FILE = "optuna_journal.log"
#: ``storage`` value of :data:`STUDY_FILE` for the embedded journal.
EMBEDDED = "journal"

# recorded sweep folder -> where it is now (set by prepare_resume before Ray unpickles the searcher)
_moved: dict[str, str] = {}


class FolderJournalStorage(JournalStorage):
    """Optuna's journal storage on ``<folder>/optuna_journal.log`` that pickles as its folder.

    Args:
        folder: the local (or shared-filesystem) sweep folder; created if missing.
    """

    def __init__(self, folder: str) -> None:
        self.folder = str(folder)
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        super().__init__(JournalFileBackend(os.path.join(self.folder, JOURNAL_FILE)))

    def __reduce__(self):
        return (_reopen_journal, (self.folder,))


def _reopen_journal(folder: str) -> FolderJournalStorage:
    """Unpickling a :class:`FolderJournalStorage`: the journal of ``folder`` (or of where that
    sweep folder is now, see :func:`prepare_resume`).

    Raises:
        SweepError: the journal is gone.
    """
    folder = _moved.get(folder, folder)
    if not os.path.exists(os.path.join(folder, JOURNAL_FILE)):
        raise SweepError(f"{folder}: the sweep's Optuna study ({JOURNAL_FILE}) is missing; restore it "
                         "from a copy of the sweep folder (without it the sampler cannot continue)")
    return FolderJournalStorage(folder)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: show it as given
        return url


def open_rdb(url: str) -> RDBStorage:
    """Optuna's ``RDBStorage`` on ``url`` (tables created if missing).

    Raises:
        SweepError: the database driver is not installed, or the server cannot be reached,
            one line naming the URL (password hidden) and the fix.
    """
    try:
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except ImportError as exc:
        driver = "'psycopg[binary]'" if url.startswith("postgres") else "the database's SQLAlchemy driver"
        raise SweepError(f"search.storage: {redact(url)}: no database driver ({exc}); "
                         f"pip install {driver}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's OperationalError and kin
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"search.storage: cannot open {redact(url)}: {first}; check the server is up and "
                         "the URL's user, host, port and database") from None


def new_study(name: str, exp_path: str, url: str | None,
              objectives: dict[str, str] | None = None) -> tuple[str, BaseStorage] | None:
    """A fresh study for a new sweep, created in its storage and recorded in the sweep folder.

    Args:
        name: the sweep's name (the study is ``<name>-<8 hex digits>``, unique per sweep).
        exp_path: the sweep folder (local path or ``s3://``/``gs://`` URI).
        url: ``search.storage`` (an SQLAlchemy URL) or None for the embedded journal.
        objectives: metric -> ``"min"``/``"max"``: the study is created with these directions
            and metric names (the dashboard shows ``val_accuracy``, not "Objective 0") and the
            sweep folder as a user attribute; Ray's ``OptunaSearch`` then loads it. None: Ray
            creates it.

    Returns:
        ``(study_name, storage)``, or None (in-memory study) for an s3/gs folder without ``url``.

    Raises:
        SweepError: from :func:`open_rdb`.
    """
    if url is None and is_uri(exp_path):
        return None
    storage: BaseStorage = open_rdb(url) if url else FolderJournalStorage(exp_path)
    study_name = f"{name}-{uuid.uuid4().hex[:8]}"
    if objectives:
        _create(study_name, storage, objectives, exp_path)
    record = {"study_name": study_name, "storage": url or EMBEDDED, "folder": exp_path}
    write_file(exp_path, STUDY_FILE, json.dumps(record, indent=1) + "\n")
    return study_name, storage


def _create(study_name: str, storage: BaseStorage, objectives: dict[str, str], exp_path: str) -> None:
    """Create the study with its directions, metric names and sweep folder (user attribute)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line on the console
    study = optuna.create_study(study_name=study_name, storage=storage,
                                directions=["minimize" if m == "min" else "maximize" for m in objectives.values()])
    with warnings.catch_warnings():  # set_metric_names is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))
    study.set_user_attr("sweep_folder", exp_path)


def read_study_record(exp_path: str) -> dict[str, Any] | None:
    """The sweep folder's :data:`STUDY_FILE`, or None when it has none (a grid, an s3/gs folder
    without ``search.storage``, or a sweep run before studies were stored)."""
    if is_uri(exp_path):
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(exp_path)
        try:
            with fs.open_input_stream(f"{p}/{STUDY_FILE}") as fh:
                return json.loads(fh.read().decode())
        except (FileNotFoundError, OSError):
            return None
    path = Path(exp_path) / STUDY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def open_study_storage(exp_path: str, record: dict[str, Any]) -> BaseStorage:
    """The storage a :data:`STUDY_FILE` record names, for a reader (the dashboard).

    Raises:
        SweepError: the embedded journal is missing or the database cannot be opened.
    """
    if record["storage"] == EMBEDDED:
        if is_uri(exp_path) or not (Path(exp_path) / JOURNAL_FILE).is_file():
            raise SweepError(f"{exp_path}: {STUDY_FILE} names an embedded study but {JOURNAL_FILE} is not "
                             "in the folder; copy the whole sweep folder")
        return FolderJournalStorage(exp_path)
    return open_rdb(record["storage"])


def prepare_resume(exp_path: str) -> None:
    """Before ``Tuner.restore`` unpickles the searcher: an embedded study recorded at another
    folder (the sweep folder was moved or copied) is reopened here, at ``exp_path``."""
    record = read_study_record(exp_path)
    if record and record.get("storage") == EMBEDDED and record.get("folder") != exp_path:
        _moved[record["folder"]] = exp_path
