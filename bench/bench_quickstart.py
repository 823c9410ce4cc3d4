"""The quickstart as a user runs it, whole process, against the same search in plain Optuna.

Each side is one fresh process timed from its start to its exit (imports, data, Ray's start and
stop, the final table included), the two alternating pair by pair (``_pairs.interleave``):

    sweeplab : ``python -m sweeplab.cli run tune_jobs/quickstart.yaml --quiet`` (local Ray)
    optuna   : ``python bench/quickstart_plain_optuna.py`` (same data, model, space, sampler,
               seed, epochs, successive-halving pruning; ``max_concurrent`` Optuna threads)

Figure: the median of the per-pair ratios sweeplab / optuna (issue 18 item 2: target <= 1.5;
2.4 measured at a56b56d). ``--before-env KEY=VALUE`` (e.g. ``SWEEPLAB_RAY_SPEEDUPS=0``: Ray
as shipped) and/or ``--before-lib DIR`` (``PYTHONPATH=DIR``: an older sweeplab unpacked with
``git archive <commit> lib | tar -x -C /tmp/before``) add a third side, the same command in that
environment, timed in the same rounds (the two sweeplab runs of a round in alternating order),
and its ratio to the current tree. ``--set`` overrides go to every side.

    flock /tmp/sweeplab-cpu.lock python bench/bench_quickstart.py --pairs 3        # ~3 min
    flock /tmp/sweeplab-cpu.lock python bench/bench_quickstart.py --pairs 3 --before-env SWEEPLAB_RAY_SPEEDUPS=0
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import Target, interleave, load, report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_seconds(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one command from start to exit; its output goes to a log file in the temp
    dir (printed, last lines, when it fails).

    Raises:
        RuntimeError: the command failed.
    """
    log = Path(tempfile.gettempdir()) / "bench_quickstart.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.call(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{log.read_text()[-3000:]}")
    return seconds


def main() -> None:
    """Time the sides, print the figures beside their targets."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", default="tune_jobs/quickstart.yaml")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--before-lib", help="a third side: the same sweeplab command with PYTHONPATH=this folder")
    ap.add_argument("--before-env", action="append", default=[], metavar="KEY=VALUE",
                    help="a third side: the same sweeplab command with this environment variable")
    args = ap.parse_args()
    before_env = dict(kv.split("=", 1) for kv in args.before_env)
    if args.before_lib:
        before_env["PYTHONPATH"] = str(Path(args.before_lib).absolute())
    sets = [x for o in args.overrides for x in ("--set", o)]
    storage = tempfile.mkdtemp(prefix="bench_quickstart_")
    before: list[float] = []

    def sweeplab(i: int, env: dict[str, str] | None = None, tag: str = "now") -> float:
        name = f"qs_{tag}_{i}_{time.time_ns()}"
        return run_seconds([sys.executable, "-m", "sweeplab.cli", "run", args.job, "--quiet", "--storage-path",
                            storage, "--name", name, *sets], env)

    def sweeplab_and_before(i: int) -> float:
        if not before_env:
            return sweeplab(i)
        if i % 2:  # both inside the same half of the pair, in alternating order
            before.append(sweeplab(i, before_env, "before"))
            return sweeplab(i)
        now = sweeplab(i)
        before.append(sweeplab(i, before_env, "before"))
        return now

    def optuna(i: int) -> float:
        return run_seconds([sys.executable, str(ROOT / "bench" / "quickstart_plain_optuna.py"), args.job, *sets])

    print(f"quickstart, whole process: {args.pairs} pairs, load {load()[0]:.2f}, {os.cpu_count()} CPUs")
    pairs = interleave(sweeplab_and_before, optuna, args.pairs)
    report("quickstart: sweeplab / plain Optuna, whole process", pairs.ratios, Target("<=", 1.5),
           what=f"sweeplab {sorted(round(x, 1) for x in pairs.a)} s, plain Optuna "
                f"{sorted(round(x, 1) for x in pairs.b)} s",
           load_before=pairs.load_before, load_after=pairs.load_after,
           sweeplab_s=[round(x, 2) for x in pairs.a], optuna_s=[round(x, 2) for x in pairs.b])
    if before:
        report("quickstart: older sweeplab / plain Optuna, whole process",
               [x / y for x, y in zip(before, pairs.b)], Target("<=", None),
               what=f"{before_env}: {sorted(round(x, 1) for x in before)} s",
               load_before=pairs.load_before, load_after=pairs.load_after, before_s=[round(x, 2) for x in before])
        report("quickstart: sweeplab / older sweeplab, whole process", [x / y for x, y in zip(pairs.a, before)],
               Target("<=", None), load_before=pairs.load_before, load_after=pairs.load_after)


if __name__ == "__main__":
    main()
