"""Steps per second of the ``variational_mnist`` family (the conjugated mixture model) on MNIST.

Runs the family directly (no Ray) at each ``--threads`` value: ``--steps`` optimisation steps of
``train_iteration`` after a short warm-up, then one full ``evaluate`` (10,000 test images and
10,000 prior samples for R²). Prints wall-clock and process-CPU seconds with the load average:
on a shared machine the CPU seconds at 1 thread are the better estimate of a free core, and
``wall`` shows what the current load gives. Also prints how many steps fit in ``--minutes``.
Used to size ``steps`` in ``tune_jobs/variational_mnist*.yaml``.

    python bench/bench_variational_mnist_step.py --root /work/data --threads 1 2
    python bench/bench_variational_mnist_step.py --n-latent 256 --n-clusters 30

Needs MNIST in the layout ``shared/data/materialize.sh ROOT`` writes; with ``--random`` it uses
random uint8 images of MNIST's shape instead.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from sweeplab.datasets.base import DataBundle, load_dataset
from sweeplab.families.variational_mnist import VariationalMNISTFamily


def main() -> None:
    """Parse the arguments and print one timing line per thread count."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="/work/data")
    ap.add_argument("--random", action="store_true", help="random images of MNIST's shape")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--n-latent", type=int, default=128)
    ap.add_argument("--n-clusters", type=int, default=30)
    ap.add_argument("--interaction", choices=["full", "hierarchical"], default="full")
    ap.add_argument("--mode", choices=["gradient", "analytical"], default="gradient")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args()
    if args.random:
        rng = np.random.default_rng(0)
        data = DataBundle("random", rng.integers(0, 256, (60000, 1, 28, 28), dtype=np.uint8),
                          rng.integers(0, 10, 60000), rng.integers(0, 256, (10000, 1, 28, 28), dtype=np.uint8),
                          rng.integers(0, 10, 10000), num_classes=10)
    else:
        data = load_dataset("mnist", args.root)
    for threads in args.threads:
        torch.set_num_threads(threads)
        cfg = VariationalMNISTFamily.Config(
            n_latent=args.n_latent, n_clusters=args.n_clusters, interaction=args.interaction, mode=args.mode,
            batch_size=args.batch_size, steps=10**7, steps_per_iteration=5, kl_warmup_steps=1000)
        fam = VariationalMNISTFamily(cfg, data, torch.device("cpu"))
        fam.train_iteration(0)  # warm-up; beta > 0 from here on, so the conjugation penalty is timed
        fam.config = cfg.model_copy(update={"steps_per_iteration": args.steps})
        c0, w0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()[0]
        fam.train_iteration(1)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        line = (f"threads={threads} L={args.n_latent} K={args.n_clusters} B={args.batch_size} "
                f"{args.interaction}/{args.mode}: {args.steps / wall:.2f} steps/s wall "
                f"({1000 * wall / args.steps:.0f} ms/step), {1000 * cpu / args.steps:.0f} CPU-ms/step "
                f"(all threads); {args.minutes:g} min = {int(60 * args.minutes * args.steps / wall)} "
                f"steps at this wall rate; load {load0:.1f}->{os.getloadavg()[0]:.1f}")
        if not args.no_eval:
            c1, w1 = time.process_time(), time.perf_counter()
            fam.evaluate(1)
            line += f"; full evaluate {time.perf_counter() - w1:.1f} s wall ({time.process_time() - c1:.1f} s CPU)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
