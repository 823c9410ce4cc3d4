"""Small-trial scale: N trials of ~1 s, 2 at a time, sweeplab vs bare Ray Tune, interleaved.

Each trial is one iteration of the ``analytic`` family (Branin) with ``sleep_seconds=1``, so the
ideal wall time of a sweep is ``N x 1 s / 2`` on 2 CPUs and everything above it is the
machinery's: scheduling, trial processes, results, checkpoints, the experiment state.

    sweeplab : ``run_sweep`` of the job below (TPE through Ray Tune's ``OptunaSearch``, no
               scheduler, a checkpoint per trial as every sweeplab trial writes, actor reuse)
    bare     : the same search written directly in Ray Tune: a function trainable that sleeps 1 s
               and reports Branin's value, ``OptunaSearch`` with the very sampler sweeplab builds
               (``sweeplab.runner.search``: multivariate grouped TPE, same startup trials and
               seed), ``max_concurrent_trials=2``, ``reuse_actors=True``, no checkpoints

Both sides share one local Ray (started once here, so ``ray.init`` is in neither figure) and
alternate A B, B A, ... for each N. Figures: each side's wall time over the ideal (median of
its runs; target for sweeplab <= 1.3 at N >= 100, <= 1.2 once the start-up work of issue 18
item 2 lands) and the per-pair ratio sweeplab / bare.

    flock /tmp/sweeplab-cpu.lock python bench/bench_trial_scale.py            # N = 20, 100
    flock /tmp/sweeplab-cpu.lock python bench/bench_trial_scale.py --full     # and N = 1,000 (~20 min)
    flock /tmp/sweeplab-cpu.lock python bench/bench_trial_scale.py --sizes 1000 --sweeplab-only   # ~10 min
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import Target, interleave, report  # noqa: E402

SLEEP = 1.0


def job(n: int, name: str) -> dict:
    """The sweeplab job of ``n`` one-iteration trials of ``SLEEP`` seconds, 2 at a time."""
    return {
        "name": name, "trainable": "analytic", "data": {"name": "none"},
        "train": {"function": "branin", "budget": 1, "sleep_seconds": SLEEP},
        "search": {"sampler": "tpe", "seed": 0, "num_samples": n, "max_concurrent": 2,
                   "space": {"x1": {"type": "float", "low": -5.0, "high": 10.0},
                             "x2": {"type": "float", "low": 0.0, "high": 15.0}}},
        "metric": "val_value", "mode": "min", "scheduler": {"type": "none"},
        "resources": {"cpu": 1, "gpu": 0}, "checkpoint": {"every": 1, "keep": 1},
    }


def run_sweeplab(n: int, storage: str) -> float:
    """Wall seconds of ``run_sweep`` for ``n`` trials (Ray already running)."""
    from sweeplab.runner import run_sweep
    from sweeplab.spec import validate_spec

    spec = validate_spec(job(n, f"scale{n}_{time.time_ns()}"))
    t0 = time.perf_counter()
    _, results = run_sweep(spec, storage_path=storage, verbose=0)
    seconds = time.perf_counter() - t0
    assert len(results) == n and not results.errors, f"sweeplab: {len(results)} results, {results.errors}"
    return seconds


def bare_trainable(config: dict) -> None:
    """One trial written for Ray Tune directly: sleep, then report Branin's value."""
    from ray import tune

    time.sleep(SLEEP)
    x1, x2 = config["x1"], config["x2"]
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    value = (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10
    tune.report({"val_value": value})


def run_bare(n: int, storage: str) -> float:
    """Wall seconds of ``Tuner.fit`` for the same search in plain Ray Tune (Ray already running)."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from sweeplab.runner.search import DefineByRunSpace, _optuna_sampler
    from sweeplab.spec import validate_spec

    spec = validate_spec(job(n, "bare"))
    t0 = time.perf_counter()
    search = OptunaSearch(space=DefineByRunSpace(dict(spec.search.space)), metric="val_value", mode="min",
                          sampler=_optuna_sampler(spec))
    tuner = tune.Tuner(
        tune.with_resources(bare_trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(metric="val_value", mode="min", search_alg=search, num_samples=n,
                                    max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name=f"bare{n}_{time.time_ns()}", storage_path=storage, verbose=0))
    results = tuner.fit()
    seconds = time.perf_counter() - t0
    assert len(results) == n and not results.errors, f"bare: {len(results)} results, {results.errors}"
    return seconds


def measure(n: int, pairs: int, storage: str) -> None:
    """Interleave both sides ``pairs`` times at ``n`` trials and report the figures."""
    ideal = n * SLEEP / 2
    print(f"\nN = {n} trials of {SLEEP:g} s, 2 at a time: ideal {ideal:.0f} s", flush=True)
    p = interleave(lambda i: run_sweeplab(n, storage), lambda i: run_bare(n, storage), pairs)
    loads = {"load_before": p.load_before, "load_after": p.load_after}
    target = Target("<=", 1.3) if n >= 100 else Target("<=", None)
    report(f"sweeplab wall / ideal, N={n}", [a / ideal for a in p.a], target,
           what=f"sweeplab run_sweep wall seconds {[round(a, 1) for a in p.a]} over N x 1 s / 2 = {ideal:g} s",
           per_trial_s=round(min(p.a) / n, 4), **loads)
    report(f"bare Ray Tune wall / ideal, N={n}", [b / ideal for b in p.b], Target("<=", None),
           what=f"bare Tuner.fit wall seconds {[round(b, 1) for b in p.b]} (OptunaSearch, reuse_actors=True)",
           per_trial_s=round(min(p.b) / n, 4), **loads)
    report(f"sweeplab / bare Ray Tune, N={n}", p.ratios, Target("<=", None),
           what="per-pair ratio of the two wall times", **loads)


def measure_one_side(n: int, storage: str) -> None:
    """sweeplab alone at ``n`` trials (no bare pair): wall over ideal and seconds per trial."""
    from _pairs import load

    ideal = n * SLEEP / 2
    before = load()
    seconds = run_sweeplab(n, storage)
    report(f"sweeplab wall / ideal, N={n} (sweeplab only)", [seconds / ideal], Target("<=", 1.3),
           what=f"one run: {seconds:.1f} s over N x 1 s / 2 = {ideal:g} s", per_trial_s=round(seconds / n, 4),
           load_before=before, load_after=load())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also N = 1,000 (one pair: about 20 minutes)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--pairs", type=int, nargs="+", default=[8, 2],
                    help="pairs for each size (N = 20 needs 8: a 13-s sweep moves 10 %% with a second of noise)")
    ap.add_argument("--sweeplab-only", action="store_true", help="time sweeplab alone, once a size (half the time)")
    args = ap.parse_args()
    sizes, pairs = list(args.sizes), list(args.pairs)
    if args.full:
        sizes.append(1000)
        pairs.append(1)
    from sweeplab.runner import init_ray, prefer_loopback

    prefer_loopback(None)
    init_ray(num_cpus=2)  # once, for both sides
    with tempfile.TemporaryDirectory() as storage:
        run_sweeplab(4, storage), run_bare(4, storage)  # warm-up: trial processes, imports, Optuna
        for n, k in zip(sizes, pairs + [pairs[-1]] * (len(sizes) - len(pairs))):
            if args.sweeplab_only:
                measure_one_side(n, storage)
            else:
                measure(n, k, storage)


if __name__ == "__main__":
    main()
