"""The quickstart's search written with plain Optuna in one process: the yardstick of sweeplab's
start-up and per-trial overhead (issue 18, item 2: the quickstart within 1.5x of this).

Same job as ``tune_jobs/quickstart.yaml`` (read from it, with the same ``--set`` overrides):
the same digits data and validation split (``sweeplab.runner.prepare_data``), the same CNN and
training loop per epoch (the ``cnn_classifier`` family, built by the kit's ``build_family`` with
the job's fixed ``train`` values), the same space through the same define-by-run function, the
same Optuna sampler (``search.sampler``, seed, startup trials), and early stopping by Optuna's
``SuccessiveHalvingPruner`` with ASHA's settings (``min_resource`` = grace period,
``reduction_factor``): what Ray's ASHA does, without Ray. ``max_concurrent`` trials run at a
time as Optuna threads (``n_jobs``), each with one torch thread, as the sweep's 1-CPU trials.

    python bench/quickstart_plain_optuna.py tune_jobs/quickstart.yaml [--set FIELD=VALUE ...]

Prints the best ``val_accuracy`` and its configuration, the number of pruned trials, and the
process's wall seconds from its first line (imports included) to the end of the search.
"""
from __future__ import annotations

import argparse
import time

T0 = time.perf_counter()


def _objective(spec, data):
    """An Optuna objective training one trial of ``spec``'s family on ``data`` epoch by epoch,
    reporting ``spec.metric`` after each epoch to the pruner."""
    import optuna

    from sweeplab.kit.loop import build_family
    from sweeplab.runner.search import DefineByRunSpace

    space = DefineByRunSpace(dict(spec.search.space))

    def objective(trial: optuna.Trial) -> float:
        space(trial)
        fam = build_family(spec.trainable, {**spec.train, **trial.params}, data, cpus=1)
        value = float("nan")
        for it in range(fam.num_iterations):
            fam.train_iteration(it)
            value = float(fam.evaluate(it)[spec.metric])
            trial.report(value, it + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    return objective


def main() -> None:
    """Run the search; print its best value, its configuration and the wall time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", nargs="?", default="tune_jobs/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()

    import optuna
    import torch

    from sweeplab.runner import prepare_data
    from sweeplab.runner.search import _optuna_sampler
    from sweeplab.spec import load_spec

    spec = load_spec(args.job, args.overrides)
    if spec.scheduler.type != "asha" or spec.multi_objective or spec.repeats > 1:
        raise SystemExit("this baseline covers one-objective, one-seed jobs with ASHA")
    torch.set_num_threads(1)
    data = prepare_data(spec)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.scheduler.grace_period,
                                                    reduction_factor=int(spec.scheduler.reduction_factor))
    study = optuna.create_study(direction="maximize" if spec.resolved_mode() == "max" else "minimize",
                                sampler=_optuna_sampler(spec), pruner=pruner)
    study.optimize(_objective(spec, data), n_trials=spec.search.num_samples, n_jobs=spec.search.max_concurrent)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    print(f"best {spec.metric} {study.best_value:.4f} {study.best_params}")
    print(f"trials {len(study.trials)}, pruned {pruned}")
    print(f"wall_seconds {time.perf_counter() - T0:.2f}")


if __name__ == "__main__":
    main()
