"""The ``sweeplab`` command: run, resume, validate, table, best, plot, compare, verdicts, info, report.

Every user error (bad job file, missing data, unknown sweep) prints one ``sweeplab: error:``
block naming the file/field and the fix, and exits with status 2; no stack trace.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

import yaml

EXIT_USAGE = 2


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_cluster(sp: argparse.ArgumentParser) -> None:
    """Options of commands that start or attach to Ray."""
    sp.add_argument("--address", help="attach to a running Ray cluster ('auto' or host:port)")
    sp.add_argument("--storage-path", help="where sweep folders live: a local path, s3://..., gs://... "
                    "(default: $SWEEPLAB_STORAGE or ./sweeps)")
    sp.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (default: all)")
    sp.add_argument("--dashboard", action="store_true", help="start Ray's dashboard with a local Ray")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and the tests)."""
    p = argparse.ArgumentParser(prog="sweeplab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    _add_running(sub)
    _add_reading(sub)
    return p


def _add_running(sub) -> None:
    """``run``, ``resume`` and ``validate``."""
    run = sub.add_parser("run", help="run a job file as a sweep")
    run.add_argument("job", help="a job file, e.g. tune_jobs/quickstart.yaml")
    run.add_argument("--name", help="the sweep's folder name (default: the job's name)")
    run.add_argument("--num-samples", type=int, help="override search.num_samples")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                     help="override any job field, e.g. --set train.epochs=2 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no per-trial progress from Ray Tune")
    _add_cluster(run)

    res = sub.add_parser("resume", help="continue an interrupted sweep")
    res.add_argument("sweep", help="the sweep's folder, or its name under --storage-path")
    res.add_argument("--restart-errored", action="store_true",
                     help="restart errored trials from scratch instead of from their last checkpoint")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sweeplab`` command; returns the exit status.

    Arguments are parsed before anything heavy is imported: ``--help`` and usage errors answer
    at once, and ``validate`` imports only the job's own family (torch), never Ray.
    """
    args = build_parser().parse_args(argv)
    from sweeplab.datasets.base import DatasetError
    from sweeplab.runner import SweepError
    from sweeplab.spec import SpecError

    try:
        return _dispatch(args)
    except (SpecError, SweepError, DatasetError) as exc:
        print(f"sweeplab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyError as exc:  # unknown trainable looked up outside the spec
        print(f"sweeplab: error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `sweeplab info PATH | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    items = list(args.overrides)
    if getattr(args, "num_samples", None) is not None:
        items.append(f"search.num_samples={args.num_samples}")
    return items


def _dispatch(args: argparse.Namespace) -> int:
    handlers = {"validate": _validate, "run": _run, "resume": _resume, "table": _table, "best": _best,
                "plot": _plot, "compare": _compare, "verdicts": _verdicts, "info": _info, "report": _report}
    return handlers[args.command](args)


def _load(args: argparse.Namespace, path: str | None = None):
    from sweeplab.results import load_sweep

    return load_sweep(path or args.sweep, args.storage_path)


def _sound_status(sweep, status: list[str] | None, at_iteration: int | None) -> list[str] | None:
    """``--status`` as given; else, when a scheduler stopped trials at other budgets, completed
    trials only, with a note on stderr (means and tests never mix budgets silently)."""
    from sweeplab.results.stats import mixed_budgets

    if status or at_iteration is not None:
        return status
    n = mixed_budgets(sweep)
    if not n:
        return None
    print(f"note: {sweep.spec.name}: {n} trial(s) stopped early or unfinished are left out (their last values "
          "come from shorter runs); --status completed,stopped to include them, --at-iteration N to compare "
          "every trial at N iterations", file=sys.stderr)
    return ["completed"]


def _table(args: argparse.Namespace) -> int:
    sweep = _load(args)
    if args.pareto:
        from sweeplab.results.tables import render, trial_frame

        ids = set(sweep.pareto_front()["trial_id"])
        frame = trial_frame(sweep, args.metrics, args.digits, args.status)
        print(render(frame[frame["trial_id"].isin(ids)], args.format))
        return 0
    status = _sound_status(sweep, args.status, args.at_iteration) if args.group_by else args.status
    print(sweep.table(group_by=args.group_by, metrics=args.metrics, fmt=args.format, digits=args.digits,
                      status=status, at_iteration=args.at_iteration))
    return 0


def _best(args: argparse.Namespace) -> int:
    sweep = _load(args)
    _check_metric(sweep, args.metric)
    if args.pick:
        config = sweep.best_pick_config(args.pick)
        row = sweep.pick(args.pick)
        print(f"# picked trial {row['trial_id']} by {args.pick!r}", file=sys.stderr)
        if args.config_only:
            print(yaml.safe_dump(config, sort_keys=False), end="")
        else:
            from sweeplab.results.jobs import best_job

            job = best_job(sweep)
            job["train"] = config
            print(yaml.safe_dump(job, sort_keys=False, allow_unicode=True), end="")
        return 0
    if sweep.spec.multi_objective and args.metric is None:
        from sweeplab.runner import SweepError

        raise SweepError(f"{sweep.path}: a multi-objective sweep has a Pareto front (sweeplab table --pareto), not "
                         f"one best trial; choose with --pick, e.g. --pick 'min {sweep.spec.objectives()[1]} within "
                         f"1% of {sweep.metric}', or rank by one --metric")
    if args.config_only:
        print(yaml.safe_dump(sweep.best_config(args.metric, args.mode), sort_keys=False), end="")
    elif args.top != 1 or args.repeats is not None:
        repeats = args.repeats if args.repeats is not None else 3
        print(yaml.safe_dump(sweep.confirm_job(args.top, repeats, args.metric, args.mode),
                             sort_keys=False, allow_unicode=True), end="")
    else:
        print(yaml.safe_dump(sweep.best_job(args.metric, args.mode), sort_keys=False), end="")
    return 0


def _plot(args: argparse.Namespace) -> int:
    sweep = _load(args)
    for path in sweep.plot(args.out or f"{sweep.path}/plots", args.metric, args.at_iteration):
        print(path)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from sweeplab.results import compare_sweeps

    sweeps = [_load(args, path) for path in args.sweep]
    for sweep in sweeps:
        _check_metric(sweep, args.metric)
    statuses = [_sound_status(s, args.status, args.at_iteration) for s in sweeps]
    status = next((s for s in statuses if s), None)
    from sweeplab.results.stats import MixedBudgetWarning

    with warnings.catch_warnings():  # --status chose which budgets to mix; the default never mixes them
        warnings.simplefilter("ignore", MixedBudgetWarning)
        out = compare_sweeps(sweeps, args.metric, args.group_by, pool=args.pool,
                             include=status or ("completed", "stopped", "unfinished"), at_iteration=args.at_iteration)
    print(f"best group: {out.attrs.get('best')} (n = {out.attrs.get('best_n')})")
    print(out.to_markdown(index=False, floatfmt=".4g") if not out.empty else "(one group only)")
    if len(out) > 1:
        print("p_holm: Holm-adjusted over these tests (family-wise error); p_bh: Benjamini-Hochberg (false "
              "discovery rate)")
    return 0


def _verdicts(args: argparse.Namespace) -> int:
    from sweeplab.results.verdicts import read_hypotheses, render_verdicts

    sweep = _load(args)
    hs = read_hypotheses(args.hypotheses, sweep) if args.hypotheses else None
    print(render_verdicts(sweep.verdicts(hs), args.format, args.digits))
    return 0


def _info(args: argparse.Namespace) -> int:
    from sweeplab.runner.folder import locate_sweep, read_job
    from sweeplab.runner.record import format_record, read_record

    path = locate_sweep(args.sweep, args.storage_path)
    read_job(path)  # a sweep folder at all?
    print(format_record(read_record(path), path))
    return 0


def _report(args: argparse.Namespace) -> int:
    from sweeplab.results.report import write_report

    sweeps = [_load(args, path) for path in args.sweep]
    print(write_report(sweeps, args.out))
    return 0


def _check_metric(sweep, metric: str | None) -> None:
    """Raise SweepError when ``--metric`` is not one the sweep's family reports."""
    from sweeplab.runner import SweepError

    if metric is not None and metric not in sweep.metric_names:
        raise SweepError(f"--metric {metric}: {sweep.spec.trainable} does not report it; choose one of "
                         f"{', '.join(sweep.metric_names)}")


def _validate(args: argparse.Namespace) -> int:
    from sweeplab.spec import load_spec

    spec = load_spec(args.job, _overrides(args))
    fam = spec.family()
    print(f"{args.job}: OK")
    print(f"  trainable   {spec.trainable} ({fam.__doc__.strip().splitlines()[0] if fam.__doc__ else ''})")
    print(f"  data        {spec.data.name} from {spec.data.resolved_root() or '(shipped with a package)'}")
    configs = spec.total_trials() // spec.repeats
    print(f"  search      {spec.search.sampler}, {configs} configuration{'s' if configs != 1 else ''}"
          f" x {spec.repeats} seed{'s' if spec.repeats > 1 else ''} = {spec.total_trials()} trials")
    print("  objective   " + ", ".join(f"{m} {x}" for m, x in zip(spec.resolved_modes(), spec.objectives())))
    sched = spec.scheduler
    if sched.type == "asha":
        print(f"  scheduler   ASHA max_t={spec.max_iterations()} grace_period={sched.grace_period} "
              f"reduction_factor={sched.reduction_factor:g}")
    elif sched.type == "hyperband":
        print(f"  scheduler   HyperBand max_t={spec.max_iterations()} reduction_factor={sched.reduction_factor:g}")
    elif sched.type == "median":
        print(f"  scheduler   median stopping, grace_period={sched.grace_period} "
              f"min_samples_required={sched.min_samples_required}")
    else:
        print(f"  scheduler   none ({spec.max_iterations()} iterations a trial)")
    from sweeplab.spec.hypotheses import describe_group

    for h in spec.hypotheses:
        print(f"  hypothesis  {h.id}: {h.metric} of [{describe_group(h.a)}] {h.direction[2]} [{describe_group(h.b)}]"
              f"{f' within {h.margin:g}' if h.margin else ''} ({h.test}, alpha {h.alpha:g})")
    print(f"  resources   {spec.resources.cpu:g} CPU, {spec.resources.gpu:g} GPU per trial")
    return 0


def _finish(exp_path: str) -> int:
    from sweeplab.results import load_sweep

    sweep = load_sweep(exp_path)
    df = sweep.dataframe()
    print()
    print(f"## {sweep.spec.name}: {len(df)} trials  ({exp_path})")
    print(sweep.table(digits=4))
    if sweep.spec.repeats > 1 or sweep.spec.search.variants:
        print()
        print(sweep.table(group_by=sweep.default_group_by(), digits=4))
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    print()
    print("status: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    _finish_best(sweep)
    print(f"\nTensorBoard:  tensorboard --logdir {exp_path}")
    print(f"Python:       from sweeplab import load_sweep; s = load_sweep({exp_path!r})")
    if counts.get("unfinished"):
        print(f"\n{counts['unfinished']} trial(s) unfinished: continue with  sweeplab resume {exp_path}")
        return 1
    if df.empty or counts.get("error", 0) == len(df):
        return 1
    return 0


def _finish_best(sweep) -> None:
    """The best configuration, or a multi-objective job's Pareto front; then the verdicts."""
    try:
        if sweep.spec.multi_objective:
            print(f"\n## Pareto front of {', '.join(sweep.spec.objectives())} (sweeplab best --pick to choose one):")
            front = sweep.pareto_front()
            print(front[["trial_id", *sweep.param_names, *sweep.spec.objectives()]].to_markdown(index=False))
        else:
            print(f"\n## best trial by {sweep.mode} {sweep.metric}:")
            print(yaml.safe_dump(sweep.best_config(), sort_keys=False), end="")
    except Exception as exc:  # noqa: BLE001
        print(f"(no best trial: {exc})")
    if sweep.spec.hypotheses:
        from sweeplab.results.verdicts import render_verdicts

        print("\n## verdicts")
        print(render_verdicts(sweep.verdicts()))


def _run(args: argparse.Namespace) -> int:
    from sweeplab.runner import run_sweep
    from sweeplab.spec import load_spec

    spec = load_spec(args.job, _overrides(args))
    exp_path, _ = run_sweep(spec, address=args.address, storage_path=args.storage_path, name=args.name,
                            num_cpus=args.num_cpus, dashboard=args.dashboard, verbose=0 if args.quiet else 1)
    return _finish(exp_path)


def _resume(args: argparse.Namespace) -> int:
    from sweeplab.runner import resume_sweep

    exp_path, _ = resume_sweep(args.sweep, storage_path=args.storage_path, address=args.address,
                               num_cpus=args.num_cpus, dashboard=args.dashboard,
                               restart_errored=args.restart_errored)
    return _finish(exp_path)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
