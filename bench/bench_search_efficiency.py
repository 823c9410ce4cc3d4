"""Search efficiency on the ``analytic`` family: trial-iterations until a search comes within
``epsilon`` of the known minimum, TPE + ASHA against random search and a full grid, over seeds.

Each trial is a point ``x``; each iteration one more unit of budget: the reported value after
``t`` iterations is ``f(x)`` plus the mean of ``t`` draws of ``N(0, sigma_0^2)`` (exactly the
family's ``val_value``, :mod:`sweeplab.families.analytic`; the noise seeded per search seed and
trial), ``budget`` = 27 iterations a trial at most. Arms:

* ``tpe+asha``: the sampler sweeplab builds for ``search.sampler: tpe`` (``_optuna_sampler`` of
  ``sweeplab.runner.search``: multivariate, grouped TPE, ``min(10, max(3, num_samples // 3))``
  startup trials, the search seed) with Optuna's asynchronous successive halving pruner
  (``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``: rungs 1, 3, 9, 27, the rungs
  of the shipped job's Ray ``ASHAScheduler(grace_period=1, reduction_factor=3, max_t=27)``);
* ``tpe``: the same sampler, every trial to the full budget; ``random+asha``, ``random``: Optuna's
  ``RandomSampler`` (sweeplab's ``random``) with and without the pruner;
* ``grid``: every point of a regular grid (``--grid`` points a coordinate, cell centres) at the full
  budget, in a random order (the seed's).

Optuna runs directly in this process, one trial at a time (a Ray sweep runs 2 at a time and
would take minutes per search; the proposals are the same sampler's). Counted: trial-iterations
(units of budget spent, over all trials) until the first trial whose point has regret
``f(x) - f* <= epsilon`` **has run its full budget** (so the search has seen it at the best
fidelity; a good point stopped early by ASHA does not count), capped at ``--max-trials`` trials.
The figure is the median over seeds (a capped search counts as the cap: the median is then a
lower bound, marked ``>=``).

    python bench/bench_search_efficiency.py                       # branin and hartmann6, 20 seeds
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import Target, report, spread  # noqa: E402

BUDGET = 27
EPSILON = {"branin": 0.1, "hartmann6": 0.1}


def sampler(kind: str, seed: int, max_trials: int):
    """The Optuna sampler sweeplab builds for ``search.sampler: kind`` (tpe or random)."""
    from sweeplab.runner.search import _optuna_sampler
    from sweeplab.spec import validate_spec

    spec = validate_spec({"trainable": "analytic", "data": {"name": "none"}, "metric": "val_value",
                          "search": {"sampler": kind, "seed": seed, "num_samples": max_trials,
                                     "space": {"x1": {"type": "float", "low": -5.0, "high": 10.0}}},
                          "scheduler": {"type": "none"}})
    return _optuna_sampler(spec)


def optuna_search(fn, kind: str, asha: bool, seed: int, max_trials: int, epsilon: float) -> int:
    """Trial-iterations until a point within ``epsilon`` of ``f*`` completes its budget (capped:
    the iterations of ``max_trials`` trials)."""
    import optuna

    pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
              if asha else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="minimize", sampler=sampler(kind, seed, max_trials), pruner=pruner)
    used = 0
    for number in range(max_trials):
        trial = study.ask()
        x = np.array([trial.suggest_float(f"x{i + 1}", lo, hi) for i, (lo, hi) in enumerate(fn.bounds)])
        value = float(fn(x))
        noise = fn.noise_sd * np.random.default_rng([seed, number]).standard_normal(BUDGET).cumsum()
        for t in range(1, BUDGET + 1):
            used += 1
            trial.report(value + noise[t - 1] / t, t)
            if t < BUDGET and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, value + noise[-1] / BUDGET)
            if value - fn.f_star <= epsilon:
                return used
    return used


def grid_search(fn, points_per_axis: int, seed: int, epsilon: float) -> tuple[int, float]:
    """Trial-iterations until a grid point within ``epsilon`` has run (every point runs the full
    budget), in the seed's random order; the cap (the whole grid) if none is. Also the grid's
    best regret."""
    axes = [lo + (hi - lo) * (np.arange(points_per_axis) + 0.5) / points_per_axis for lo, hi in fn.bounds]
    grid = np.array(list(itertools.product(*axes)))
    regret = fn.regret(grid)[np.random.default_rng(seed).permutation(len(grid))]
    hits = np.flatnonzero(regret <= epsilon)
    return (int(hits[0]) + 1 if len(hits) else len(grid)) * BUDGET, float(regret.min())


def run_function(name: str, seeds: int, max_trials: int, grid: dict[str, int]) -> None:
    """Every arm on function ``name``, ``seeds`` seeds each; prints the table and the figures."""
    import optuna

    from sweeplab.models.analytic import FUNCTIONS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fn, eps = FUNCTIONS[name], EPSILON[name]
    arms = {"tpe+asha": ("tpe", True), "tpe": ("tpe", False), "random+asha": ("random", True),
            "random": ("random", False)}
    counts: dict[str, list[int]] = {}
    for arm, (kind, asha) in arms.items():
        counts[arm] = [optuna_search(fn, kind, asha, s, max_trials, eps) for s in range(seeds)]
    g = grid[name]
    grid_runs = [grid_search(fn, g, s, eps) for s in range(seeds)]
    counts[f"grid {g}^{fn.dim}"] = [c for c, _ in grid_runs]
    cap = {arm: max_trials * BUDGET for arm in arms} | {f"grid {g}^{fn.dim}": g ** fn.dim * BUDGET}
    print(f"\n{name} (f* = {fn.f_star:.6f}, sigma_0 = {fn.noise_sd:g}, budget {BUDGET}): trial-iterations until "
          f"a point with regret <= {eps:g} completes its budget, {seeds} seeds")
    print("| arm | median | min | quartiles | max | capped seeds | cap |")
    print("|:--|--:|--:|--:|--:|--:|--:|")
    for arm, vals in counts.items():
        s, capped = spread(vals), sum(v >= cap[arm] for v in vals)
        mark = ">=" if capped > len(vals) / 2 else ""
        print(f"| {arm} | {mark}{s['median']:.0f} | {s['min']:.0f} | {s['q1']:.0f}-{s['q3']:.0f} | "
              f"{s['max']:.0f} | {capped} | {cap[arm]} |")
    if grid_runs[0][1] > eps:
        print(f"(the {g}^{fn.dim} grid's best point has regret {grid_runs[0][1]:.3f} > {eps:g}: it never gets there)")
    for other in ("random", f"grid {g}^{fn.dim}"):
        ratios = [a / b for a, b in zip(counts["tpe+asha"], counts[other])]
        capped = sum(v >= cap[other] for v in counts[other])
        report(f"{name}: tpe+asha / {other}, trial-iterations to regret <= {eps:g}", ratios, Target("<=", 1.0),
               what=f"per-seed ratio (same seed both arms); medians {statistics.median(counts['tpe+asha']):.0f} "
                    f"vs {statistics.median(counts[other]):.0f} iterations; {other} capped in {capped} "
                    "seeds (there the ratio is an upper bound)",
               tpe_asha=counts["tpe+asha"], other=counts[other])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--functions", nargs="+", default=["branin", "hartmann6"])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--max-trials", type=int, default=400)
    ap.add_argument("--grid", type=int, nargs=2, default=[30, 4], metavar=("BRANIN", "HARTMANN6"),
                    help="grid points per coordinate")
    args = ap.parse_args()
    for name in args.functions:
        run_function(name, args.seeds, args.max_trials, {"branin": args.grid[0], "hartmann6": args.grid[1]})


if __name__ == "__main__":
    main()
