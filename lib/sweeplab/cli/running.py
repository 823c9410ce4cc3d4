"""The commands that start Ray or check a job: run, resume, validate, and the summary printed
when a sweep ends."""
from __future__ import annotations

import argparse

import yaml


def _overrides(args: argparse.Namespace) -> list[str]:
    items = list(args.overrides)
    if getattr(args, "num_samples", None) is not None:
        items.append(f"search.num_samples={args.num_samples}")
    return items


def validate(args: argparse.Namespace) -> int:
    """``sweeplab validate``: check a job file (and its data) without starting Ray; print what it would run."""
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


#: a sweep with more trials than this shows its TOP_ROWS best in the final summary (not with -v)
MAX_ROWS, TOP_ROWS = 25, 15


#: ``run``/``resume`` exit statuses besides 0 and 2 (bad input): documented in their --help
#: (:data:`sweeplab.cli.parser.EXIT_STATUS`) and README.md
EXIT_UNFINISHED, EXIT_TRIALS_ERRORED = 1, 3


def _finish(exp_path: str, verbose: int = 1) -> int:
    from sweeplab.results import load_sweep

    sweep = load_sweep(exp_path)
    df = sweep.dataframe()
    print()
    print(f"## {sweep.spec.name}: {len(df)} trials  ({exp_path})")
    if len(df) > MAX_ROWS and verbose < 2:
        from sweeplab.results.tables import render, trial_frame

        print(render(trial_frame(sweep, None, 4, None).head(TOP_ROWS), "markdown"))
        print(f"({len(df) - TOP_ROWS} more: sweeplab table {exp_path})")
    else:
        print(sweep.table(digits=4))
    if _groups_pool_trials(sweep, df):
        print()
        print(sweep.table(group_by=sweep.default_group_by(), digits=4))
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    print()
    print("status: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    missing = 0 if sweep.spec.search.time_budget_s else max(0, sweep.spec.total_trials() - len(df))
    _finish_best(sweep, unfinished=counts.get("unfinished", 0) + missing)
    print(f"\nTensorBoard:  tensorboard --logdir {exp_path}")
    print(f"Python:       from sweeplab import load_sweep; s = load_sweep({exp_path!r})")
    if counts.get("unfinished"):
        print(f"\n{counts['unfinished']} trial(s) unfinished: continue with  sweeplab resume {exp_path}")
        return EXIT_UNFINISHED
    if df.empty or counts.get("error", 0) == len(df):
        return EXIT_UNFINISHED
    if counts.get("error"):
        print(f"\n{counts['error']} trial(s) errored (exit status {EXIT_TRIALS_ERRORED}): see them with  sweeplab table "
              f"{exp_path} --status error;  sweeplab resume {exp_path}  retries them")
        return EXIT_TRIALS_ERRORED
    return 0


def _groups_pool_trials(sweep, df) -> bool:
    """Whether the grouped table (mean ± std per group) says more than the per-trial one: some
    group holds two or more trials (seeds, or a space inside a variant: the grouping of a job
    with variants is by variant). A grid of variants run once each would print the same numbers
    twice."""
    if df.empty:
        return False
    if sweep.spec.repeats > 1:
        return True
    return bool(sweep.spec.search.variants) and bool(df["variant"].duplicated().any())


def _finish_best(sweep, unfinished: int = 0) -> None:
    """The best configuration, or a multi-objective job's Pareto front; then the verdicts.
    With ``unfinished`` trials (an interrupted sweep) the heading says they are provisional."""
    note = f" (provisional: {unfinished} trial(s) unfinished)" if unfinished else ""
    try:
        if sweep.spec.multi_objective:
            print(f"\n## Pareto front of {', '.join(sweep.spec.objectives())}{note} (sweeplab best --pick to choose one):")
            front = sweep.pareto_front()
            print(front[["trial_id", *sweep.param_names, *sweep.spec.objectives()]].to_markdown(index=False))
        else:
            print(f"\n## best trial by {sweep.mode} {sweep.metric}{note}:")
            print(yaml.safe_dump(sweep.best_config(), sort_keys=False), end="")
    except Exception as exc:  # noqa: BLE001
        print(f"(no best trial: {exc})")
    if sweep.spec.hypotheses:
        from sweeplab.results.verdicts import render_verdicts

        print("\n## verdicts")
        print(render_verdicts(sweep.verdicts()))


def _verbosity(args: argparse.Namespace) -> int:
    """``-q`` 0, default 1 (status line), ``-v`` 2, ``-vv`` 3 (:mod:`sweeplab.runner.progress`)."""
    return 0 if args.quiet else 1 + args.verbose


def run(args: argparse.Namespace) -> int:
    """``sweeplab run``: run a job file as a sweep, then print its tables and best trial."""
    from sweeplab.runner import run_sweep
    from sweeplab.spec import load_spec

    spec = load_spec(args.job, _overrides(args))
    exp_path, _ = run_sweep(spec, address=args.address, storage_path=args.storage_path, name=args.name,
                            num_cpus=args.num_cpus, dashboard=args.dashboard, verbose=_verbosity(args))
    return _finish(exp_path, _verbosity(args))


def resume(args: argparse.Namespace) -> int:
    """``sweeplab resume``: continue an interrupted sweep, then print its tables and best trial."""
    from sweeplab.runner import resume_sweep

    exp_path, _ = resume_sweep(args.sweep, storage_path=args.storage_path, address=args.address,
                               num_cpus=args.num_cpus, dashboard=args.dashboard,
                               restart_errored=args.restart_errored, verbose=_verbosity(args))
    return _finish(exp_path, _verbosity(args))
