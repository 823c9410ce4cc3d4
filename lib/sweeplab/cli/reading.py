"""The commands that read sweep folders: table, best, plot, compare, verdicts, info, report."""
from __future__ import annotations

import argparse
import sys
import warnings

import yaml


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


def table(args: argparse.Namespace) -> int:
    """``sweeplab table``: a sweep's results table (per trial, grouped, or its Pareto front)."""
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


def best(args: argparse.Namespace) -> int:
    """``sweeplab best``: the best (or picked) trial as a re-runnable job, its config, or a confirmation job."""
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


def plot(args: argparse.Namespace) -> int:
    """``sweeplab plot``: learning curves and Optuna's plots as PNG files."""
    sweep = _load(args)
    for path in sweep.plot(args.out or f"{sweep.path}/plots", args.metric, args.at_iteration):
        print(path)
    return 0


def compare(args: argparse.Namespace) -> int:
    """``sweeplab compare``: Welch's t-tests of every group against the best one, Holm and BH adjusted."""
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


def verdicts(args: argparse.Namespace) -> int:
    """``sweeplab verdicts``: the job's (or given) hypotheses judged on a sweep."""
    from sweeplab.results.verdicts import read_hypotheses, render_verdicts

    sweep = _load(args)
    hs = read_hypotheses(args.hypotheses, sweep) if args.hypotheses else None
    print(render_verdicts(sweep.verdicts(hs), args.format, args.digits))
    return 0


def info(args: argparse.Namespace) -> int:
    """``sweeplab info``: a sweep's reproducibility record."""
    from sweeplab.runner.folder import locate_sweep, read_job
    from sweeplab.runner.record import format_record, read_record

    path = locate_sweep(args.sweep, args.storage_path)
    read_job(path)  # a sweep folder at all?
    print(format_record(read_record(path), path))
    return 0


def report(args: argparse.Namespace) -> int:
    """``sweeplab report``: one self-contained HTML report of one or more sweeps."""
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
