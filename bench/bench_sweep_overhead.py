"""Epoch time of a family inside a Ray Tune sweep vs the same loop run bare, side by side.

Target: the sweep costs at most 5 % more per epoch (ratio <= 1.05). Both runs use the same
config, the same data (read once here), one torch thread, and alternate so that background load
hits both alike:

    bare   : ModelFamily.train_iteration + evaluate in this process
    sweep  : the same family through sweeplab's runner (Ray Tune, object-store data,
             tune.report + a checkpoint every epoch); Ray's per-result ``time_this_iter_s``

Usage:
    python bench/bench_sweep_overhead.py --root data                      # Fashion-MNIST
    python bench/bench_sweep_overhead.py --dataset digits --epochs 20     # no data needed
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch


def bare_epochs(family_name: str, config: dict, data, epochs: int) -> list[float]:
    """Seconds of each epoch (train + evaluate) run directly, without Ray."""
    from sweeplab.kit.family import get_family

    fam_cls = get_family(family_name)
    torch.set_num_threads(1)
    fam = fam_cls(fam_cls.Config.model_validate(config), data, torch.device("cpu"))
    out = []
    for it in range(epochs):
        t0 = time.perf_counter()
        fam.train_iteration(it)
        fam.evaluate(it)
        out.append(time.perf_counter() - t0)
    return out


def sweep_epochs(family_name: str, config: dict, data_spec: dict, epochs: int, storage: str) -> list[float]:
    """Wall seconds between consecutive results of a one-trial sweep of the same config (Ray's
    ``time_this_iter_s``: the epoch plus tune.report and the checkpoint write)."""
    from sweeplab import load_sweep
    from sweeplab.runner import run_sweep
    from sweeplab.spec import validate_spec

    spec = validate_spec({
        "name": f"overhead-{time.time_ns()}", "trainable": family_name, "data": data_spec,
        "train": {**config, "epochs": epochs, "threads": 1}, "search": {"sampler": "grid"},
        "metric": "test_accuracy", "scheduler": {"type": "none"}, "resources": {"cpu": 1},
        "checkpoint": {"every": 1, "keep": 1},
    })
    path, _ = run_sweep(spec, storage_path=storage, verbose=0)
    hist = load_sweep(path).history().sort_values("training_iteration")
    return hist["time_this_iter_s"].tolist(), hist["iteration_seconds"].tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--root", default="data")
    p.add_argument("--train-fraction", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="bare/sweep alternations")
    p.add_argument("--config", default='{"n_blocks": 4, "filters": 32, "norm": "batch", "batch_size": 128}')
    args = p.parse_args()

    from sweeplab.runner import prefer_loopback

    prefer_loopback(None)
    import ray

    from sweeplab.datasets.base import load_dataset

    config = {**json.loads(args.config), "epochs": args.epochs}
    data_spec = {"name": args.dataset, "train_fraction": args.train_fraction}
    if args.dataset != "digits":
        data_spec["root"] = args.root
    data = load_dataset(args.dataset, args.root if args.dataset != "digits" else None)
    data = data.subset(args.train_fraction, 1.0, seed=0)
    from sweeplab.runner import init_ray

    init_ray(num_cpus=1)  # sweeplab's own local Ray: loopback, trials at normal priority
    bare, swept, inside = [], [], []
    with tempfile.TemporaryDirectory() as storage:
        for _ in range(args.rounds):
            # the first epoch of each run warms up allocators and caches: compare the rest
            bare += bare_epochs("cnn_classifier", config, data, args.epochs)[1:]
            wall, compute = sweep_epochs("cnn_classifier", config, data_spec, args.epochs, storage)
            swept += wall[1:]
            inside += compute[1:]
    ray.shutdown()
    b, s = statistics.median(bare), statistics.median(swept)
    print(f"\n{args.dataset} ({len(data.x_train)} train samples), config {config}, 1 thread")
    print(f"| run   | epochs | median s/epoch | min s/epoch |")
    print(f"|:------|-------:|---------------:|------------:|")
    print(f"| bare  | {len(bare):6d} | {b:14.3f} | {min(bare):11.3f} |")
    print(f"| sweep | {len(swept):6d} | {s:14.3f} | {min(swept):11.3f} |")
    c = statistics.median(inside)
    print(f"| sweep, train+eval only | {len(inside):6d} | {c:14.3f} | {min(inside):11.3f} |")
    print(f"\nsweep / bare = {s / b:.3f}  (median; target <= 1.05)   min ratio = {min(swept) / min(bare):.3f}")
    print(f"of which report + checkpoint: {s - c:.3f} s/epoch; compute inside the trial / bare = {c / b:.3f}")


if __name__ == "__main__":
    main()
