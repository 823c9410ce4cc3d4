"""Seconds to open a 1,000-trial sweep folder and make its table: ``load_sweep(path).dataframe()``.

The folder is written in Ray Tune's real format, grown from a real sweep: a small sweep of the
``analytic`` family (Branin, 3 iterations a trial, a checkpoint each) runs first, then each of its
trial folders (``params.json``, ``params.pkl``, ``progress.csv``, ``result.json``, the
TensorBoard events file, the checkpoint) is copied under new trial ids with new coordinates, and
the experiment state (``experiment_state-*.json``: each trial's JSON state, its pickled storage
context, its last result) is rewritten to list every copy. ``sweeplab_job.yaml`` and Ray's
searcher files are the real sweep's.

Loads of the 1,000-trial folder (A) alternate with loads of a 100-trial one (B), each in this
process after a warm-up (imports). Figures: seconds for 1,000 trials (target: a few seconds,
<= 5 s) and the per-pair ratio A/B (10 = cost linear in the number of trials).

    flock /tmp/sweeplab-cpu.lock python bench/bench_load_sweep.py
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import Target, interleave, report, timed  # noqa: E402


def real_sweep(storage: Path) -> Path:
    """Run a small real sweep (4 trials of Branin, 3 iterations each) and return its folder."""
    import yaml

    from sweeplab.runner import run_sweep
    from sweeplab.spec import validate_spec

    job = yaml.safe_load((Path(__file__).parent.parent / "tune_jobs" / "analytic_branin.yaml").read_text())
    job["search"]["num_samples"] = 4
    job.update(train={**job["train"], "budget": 3}, scheduler={"type": "none"}, checkpoint={"every": 1, "keep": 1})
    spec = validate_spec(job)
    path, _ = run_sweep(spec, storage_path=str(storage), name="seed_sweep", verbose=0)
    return Path(path)


def _rewrite(text: str, old: str, new: str) -> str:
    """``text`` with trial id ``old`` replaced by ``new`` (same length), also inside the hex of a
    pickled storage context."""
    return text.replace(old, new).replace(old.encode().hex(), new.encode().hex())


def grow(source: Path, dest: Path, n: int, seed: int = 0) -> Path:
    """Write ``dest``: the sweep ``source`` with ``n`` trials, copies of its own with new ids and
    new ``x1``/``x2``; returns ``dest``."""
    rng = random.Random(seed)
    dest.mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file() and not f.name.startswith("experiment_state"):
            shutil.copy2(f, dest / f.name)
    state_file = next(source.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    templates = state["trial_data"]
    out = []
    for i in range(n):
        trial_json, runtime = templates[i % len(templates)]
        old = json.loads(trial_json)["trial_id"]
        new = f"{i:08x}"
        x1, x2 = rng.uniform(-5, 10), rng.uniform(0, 15)
        trial = json.loads(_rewrite(trial_json, old, new))
        for key in ("config", "_Trial__unresolved_config", "evaluated_params"):
            if key in trial:
                trial[key].update(x1=x1, x2=x2)
        out.append([json.dumps(trial, indent=2), _rewrite(runtime, old, new)])
        # the folder is named by the trial's id (and, since run-named folders, its searched values)
        src_dir, dst_dir = source / json.loads(trial_json)["relative_logdir"], dest / trial["relative_logdir"]
        shutil.copytree(src_dir, dst_dir)
        for name in ("result.json", "progress.csv"):
            (dst_dir / name).write_text((src_dir / name).read_text().replace(old, new))
        params = json.loads((src_dir / "params.json").read_text())
        (dst_dir / "params.json").write_text(json.dumps({**params, "x1": x1, "x2": x2}, indent=2))
    state["trial_data"] = out
    (dest / state_file.name).write_text(json.dumps(state))
    return dest


def load_table(path: Path, expect: int) -> float:
    """Seconds of ``load_sweep(path).dataframe()``, checking it holds ``expect`` trials."""
    from sweeplab import load_sweep

    frame = []
    seconds = timed(lambda: frame.append(load_sweep(str(path)).dataframe()))
    assert len(frame[0]) == expect and frame[0]["trial_id"].is_unique and frame[0]["path"].is_unique, expect
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()
    from sweeplab.runner import prefer_loopback

    prefer_loopback(None)
    with tempfile.TemporaryDirectory() as tmp:
        source = real_sweep(Path(tmp) / "real")
        import ray

        ray.shutdown()  # loading reads files only; no Ray beside the measurement
        big = grow(source, Path(tmp) / "big" / "grown", args.trials)
        small = grow(source, Path(tmp) / "small" / "grown", args.small)
        size = sum(f.stat().st_size for f in big.rglob("*") if f.is_file())
        print(f"{args.trials} trial folders grown from a real 4-trial sweep: {size / 1e6:.1f} MB")
        p = interleave(lambda i: load_table(big, args.trials), lambda i: load_table(small, args.small),
                       args.pairs, warmup=1)
    loads = {"load_before": p.load_before, "load_after": p.load_after}
    report(f"load_sweep(...).dataframe(), {args.trials} trials, s", p.a, Target("<=", 5.0, " s"),
           what=f"seconds per load of the {args.trials}-trial folder ({size / 1e6:.1f} MB)", **loads)
    report(f"{args.trials} trials / {args.small} trials, load time", p.ratios, Target("<=", None),
           what=f"{args.trials // args.small} = cost linear in trials; "
                f"{args.small}-trial loads took {[round(b, 2) for b in p.b]} s", **loads)


if __name__ == "__main__":
    main()
