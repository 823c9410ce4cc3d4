"""``sweeplab dashboard PATH``: Optuna's dashboard (``optuna-dashboard``) on a sweep's study.

The study is found through the sweep folder's ``optuna_study.json``
(:mod:`sweeplab.runner.study`): the embedded journal in the folder, or the database of
``search.storage``. It works on a running sweep (the dashboard re-reads the storage as trials
finish) and on a finished one. The server binds to 127.0.0.1 by default: the dashboard can edit
and delete studies, so it is not for an open network.
"""
from __future__ import annotations

import argparse
import sys

from sweeplab.runner.folder import SweepError


def _no_study_reason(exp_path: str) -> str:
    """Why a sweep folder holds no study record (a grid, an s3/gs folder, an older sweep)."""
    from sweeplab.runner.folder import read_job
    from sweeplab.runner.study import STUDY_FILE

    job = read_job(exp_path)  # SweepError when the folder holds no sweep at all
    if job.search.sampler == "grid":
        return (f"{exp_path}: a grid sweep has no Optuna study (its configurations are fixed); "
                f"see it with `sweeplab table {exp_path}` or `sweeplab report {exp_path}`")
    return (f"{exp_path}: no stored Optuna study (no {STUDY_FILE}: the sweep ran before studies were stored, "
            "or on s3/gs without search.storage); `sweeplab plot` writes Optuna's plots from its results")


def _study_storage(exp_path: str):
    """``(study_name, storage, study_id)`` of the sweep folder's recorded study.

    Raises:
        SweepError: no study recorded, storage unreadable, or the study is not in it.
    """
    import optuna

    from sweeplab.runner.study import open_study_storage, read_study_record

    record = read_study_record(exp_path)
    if record is None:
        raise SweepError(_no_study_reason(exp_path))
    storage = open_study_storage(exp_path, record)
    name = record["study_name"]
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise SweepError(f"{exp_path}: study {name!r} is not in its storage ({record['storage']}); "
                         "the database was reset or the journal replaced") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return name, storage, study_id


def serve(storage, host: str, port: int, on_ready=None) -> None:
    """Serve Optuna's dashboard of ``storage`` on ``host:port`` until Ctrl-C (stdlib wsgiref,
    as ``optuna-dashboard`` itself; request logs off).

    Args:
        storage: an ``optuna.storages.BaseStorage``.
        on_ready: called once the port is bound (prints the address).

    Raises:
        SweepError: the port cannot be bound (in use, or a host not of this machine).
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from optuna_dashboard import wsgi

    class _Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # the dashboard polls every few seconds
            return None

    try:
        server = make_server(host, port, wsgi(storage), handler_class=_Quiet)
    except OSError as exc:
        raise SweepError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
                         "pick another port with --port") from None
    if on_ready is not None:
        on_ready()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def dashboard(args: argparse.Namespace) -> int:
    """``sweeplab dashboard SWEEP [--host 127.0.0.1] [--port 8080]``: serve Optuna's dashboard of
    the sweep's study until Ctrl-C; returns 0.

    Raises:
        SweepError: ``optuna-dashboard`` is not installed, the folder holds no sweep or no
            stored study, or the port cannot be bound (exit status 2 via the CLI).
    """
    from sweeplab.runner.folder import locate_sweep

    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is None:
        raise SweepError("sweeplab dashboard needs optuna-dashboard: pip install optuna-dashboard")
    exp_path = locate_sweep(args.sweep, args.storage_path)
    name, storage, study_id = _study_storage(exp_path)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"sweeplab: warning: --host {args.host} lets other machines open the dashboard, which can edit "
              "and delete studies; prefer an SSH tunnel to 127.0.0.1", file=sys.stderr)
    url = f"http://{args.host}:{args.port}/dashboard/studies/{study_id}"

    def ready() -> None:
        print(f"Optuna dashboard of {exp_path} (study {name}): {url}  (Ctrl-C stops it)", flush=True)

    serve(storage, args.host, args.port, on_ready=ready)
    return 0
