"""The ``sweeplab`` command's arguments (parsed before anything heavy is imported)."""
from __future__ import annotations

import argparse

EXIT_USAGE = 2
#: ``run`` and ``resume``'s exit statuses (:func:`sweeplab.cli.running._finish`), in their --help
EXIT_STATUS = """exit status:
  0  every trial finished (completed, stopped early by the scheduler, or diverged)
  1  trials left unfinished (sweeplab resume continues them), or no trial produced a result
  2  bad input: nothing ran (the error line says what to fix)
  3  the sweep finished but some trials errored (sweeplab table PATH --status error)"""
DESCRIPTION = ("Hyperparameter sweeps of research models on Ray Tune: run, resume, validate, table, best, "
               "plot, compare, verdicts, info, report, dashboard.")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_cluster(sp: argparse.ArgumentParser) -> None:
    """Options of commands that start or attach to Ray."""
    sp.add_argument("--address", help="attach to a running Ray cluster ('auto' or host:port)")
    sp.add_argument("--storage-path", help="where sweep folders live: a local path, s3://..., gs://... "
                    "(default: $SWEEPLAB_STORAGE or ./sweeps)")
    sp.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (default: all)")
    sp.add_argument("--dashboard", action="store_true", help="start Ray's dashboard with a local Ray")


def _add_output(sp: argparse.ArgumentParser) -> None:
    """``-v``/``-q`` of the commands that run trials (:mod:`sweeplab.runner.progress`)."""
    out = sp.add_mutually_exclusive_group()
    out.add_argument("-v", "--verbose", action="count", default=0,
                     help="Ray Tune's per-trial tables besides the status line (-vv: after every result)")
    out.add_argument("-q", "--quiet", action="store_true",
                     help="no status line while it runs: only the final table and summary")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and the tests)."""
    p = argparse.ArgumentParser(prog="sweeplab", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    _add_running(sub)
    _add_reading(sub)
    _add_dashboard(sub)
    return p


def _add_running(sub) -> None:
    """``run``, ``resume`` and ``validate``."""
    run = sub.add_parser("run", help="run a job file as a sweep", epilog=EXIT_STATUS,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("job", help="a job file, e.g. tune_jobs/quickstart.yaml")
    run.add_argument("--name", help="the sweep's folder name (default: the job's name)")
    run.add_argument("--num-samples", type=int, help="override search.num_samples")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                     help="override any job field, e.g. --set train.epochs=2 (repeatable)")
    _add_output(run)
    _add_cluster(run)

    res = sub.add_parser("resume", help="continue an interrupted sweep", epilog=EXIT_STATUS,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    res.add_argument("sweep", help="the sweep's folder, or its name under --storage-path")
    res.add_argument("--restart-errored", action="store_true",
                     help="restart errored trials from scratch instead of from their last checkpoint")
    _add_output(res)
    _add_cluster(res)

    val = sub.add_parser("validate", help="check a job file without starting Ray")
    val.add_argument("job")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    val.add_argument("--num-samples", type=int)


def _add_reading(sub) -> None:
    """The commands that read sweep folders: ``table``, ``best``, ``plot``, ``compare``."""
    tab = sub.add_parser("table", help="print a sweep's results table")
    tab.add_argument("sweep")
    tab.add_argument("--group-by", type=_csv, help="aggregate mean ± std over trials per group, e.g. variant")
    tab.add_argument("--metrics", type=_csv, help="metrics to show (default: all reported)")
    tab.add_argument("--format", default="markdown", help="markdown | csv | latex | html")
    tab.add_argument("--digits", type=int, default=4)
    tab.add_argument("--status", type=_csv, help="only trials with these statuses, e.g. completed "
                     "(leaves out trials ASHA stopped early); of: completed, stopped, diverged, "
                     "error, unfinished, cancelled")
    tab.add_argument("--at-iteration", type=int, help="grouped: every trial's values at this iteration (one budget)")
    tab.add_argument("--pareto", action="store_true", help="only the trials on the Pareto front of the job's "
                     "objectives (a multi-objective job)")
    tab.add_argument("--storage-path")

    best = sub.add_parser("best", help="print the best trial's config as a re-runnable job (YAML)")
    best.add_argument("sweep")
    best.add_argument("--metric", help="rank by this metric (default: the job's)")
    best.add_argument("--mode", choices=["min", "max"])
    best.add_argument("--config-only", action="store_true", help="print only the hyperparameters")
    best.add_argument("--top", type=int, default=1,
                      help="a job rerunning the N best configurations (as grid variants) on fresh seeds")
    best.add_argument("--repeats", type=int, default=None,
                      help="seeds per configuration in that job (default 3 with --top > 1; fresh seeds: the "
                           "sweep's best trial is partly its lucky seed)")
    best.add_argument("--pick", help="choose by a rule instead, e.g. 'min num_params within 0.5%% of "
                      "val_accuracy' (%% relative to the best value; without it absolute)")
    best.add_argument("--storage-path")

    plot = sub.add_parser("plot", help="write learning curves and Optuna's plots (PNG) of a sweep")
    plot.add_argument("sweep")
    plot.add_argument("--out", help="folder for the PNGs (default: <sweep>/plots)")
    plot.add_argument("--metric")
    plot.add_argument("--at-iteration", type=int,
                      help="score every trial at this training_iteration in Optuna's plots (e.g. "
                           "ASHA's grace period), not at its last result: like budgets, fair importances")
    plot.add_argument("--storage-path")

    cmp_ = sub.add_parser("compare", help="Welch's t-test of each group against the best group "
                                          "(several sweeps: every group of every sweep)")
    cmp_.add_argument("sweep", nargs="+")
    cmp_.add_argument("--metric")
    cmp_.add_argument("--group-by", type=_csv)
    cmp_.add_argument("--pool", action="store_true",
                      help="pool same-named groups of several sweeps (e.g. more seeds of one config run later)")
    cmp_.add_argument("--status", type=_csv, help="statuses whose last values count (default: completed when "
                      "a scheduler stopped trials at other budgets, else completed,stopped,unfinished)")
    cmp_.add_argument("--at-iteration", type=int, help="every trial's value at this iteration (one budget)")
    cmp_.add_argument("--storage-path")

    _add_judging(sub)


def _add_judging(sub) -> None:
    """The commands that judge or document a sweep: ``verdicts``, ``info``, ``report``."""
    ver = sub.add_parser("verdicts", help="judge the job's hypotheses: supported, refuted or inconclusive")
    ver.add_argument("sweep")
    ver.add_argument("--hypotheses", help="judge these instead: a job file's hypotheses: or a YAML list")
    ver.add_argument("--format", default="markdown", help="markdown | csv | latex | html")
    ver.add_argument("--digits", type=int, default=3)
    ver.add_argument("--storage-path")

    info = sub.add_parser("info", help="print a sweep's reproducibility record (versions, git commit, machine, "
                                       "command, job)")
    info.add_argument("sweep")
    info.add_argument("--storage-path")

    rep = sub.add_parser("report", help="write one self-contained HTML report of one or more sweeps")
    rep.add_argument("sweep", nargs="+")
    rep.add_argument("--out", default="report.html", help="the HTML file (default: report.html)")
    rep.add_argument("--storage-path")


def _add_dashboard(sub) -> None:
    """``dashboard``: Optuna's dashboard on a sweep's stored study."""
    dash = sub.add_parser("dashboard", help="serve Optuna's dashboard (optuna-dashboard) of a running or "
                                            "finished sweep's study, on 127.0.0.1")
    dash.add_argument("sweep")
    dash.add_argument("--port", type=int, default=8080, help="default: 8080")
    dash.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    dash.add_argument("--storage-path")
