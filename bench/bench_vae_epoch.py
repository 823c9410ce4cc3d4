"""Seconds per epoch of the ``vae`` family's models of the DERP-VAE runs, on the real data.

Runs the family directly (no Ray) at ``--threads`` torch threads: for each model of
``tune_jobs/derp_vae_cifar10.yaml`` (or ``derp_vae_celeba.yaml``) one epoch of
``train_iteration`` (or ``--steps`` steps, scaled to a full epoch) and one ``evaluate``, printing
wall-clock and process CPU seconds of both. On a shared machine the CPU seconds at 1 thread are
the better estimate of an epoch on a free core; the load average is printed with every line.
Used to size the budgets written in the job files.

    python bench/bench_vae_epoch.py --dataset cifar10 --root /work/data
    python bench/bench_vae_epoch.py --dataset celeba --root /work/data --steps 40

Needs the data in the layout ``shared/data/materialize.sh ROOT`` writes.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from sweeplab.datasets.base import load_dataset
from sweeplab.families.vae import VAEFamily

#: The runs' settings (shared/specs/derp_vae.md) and their models.
SETTINGS = {
    "cifar10": (dict(hidden_dim=256, latent_dim=4, lr=1e-3, weight_decay=1e-5, batch_size=128), {},
                {"standard": dict(beta=1.0), "beta0.5": dict(beta=0.5), "beta2": dict(beta=2.0),
                 "derp3": dict(lambda_ks=1.0, num_probes=3), "derp5": dict(lambda_ks=1.0, num_probes=5)}),
    "celeba": (dict(hidden_dim=512, latent_dim=64, lr=1e-4, weight_decay=0.0, batch_size=32),
               {"attribute": "Smiling", "image_size": 64},
               {"standard": dict(beta=1.0), "beta0.1": dict(beta=0.1),
                "derp5": dict(lambda_ks=0.5, num_probes=5)}),
}


def main() -> None:
    """Parse the arguments and print one timing line per model."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=sorted(SETTINGS), default="cifar10")
    ap.add_argument("--root", default="/work/data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="time this many steps and scale to an epoch (0: full epoch)")
    ap.add_argument("--arch", choices=["mlp", "conv"], default="mlp")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base, options, models = SETTINGS[args.dataset]
    t = time.perf_counter()
    data = load_dataset(args.dataset, args.root, options=options)
    print(f"loaded {args.dataset} in {time.perf_counter() - t:.1f} s: train {data.x_train.shape}, "
          f"test {data.x_test.shape}, val {None if data.x_val is None else data.x_val.shape}", flush=True)
    steps_per_epoch = len(data.x_train) // base["batch_size"]
    timed = data
    if args.steps:
        timed = dataclasses.replace(data, x_train=data.x_train[:args.steps * base["batch_size"]],
                                    y_train=data.y_train[:args.steps * base["batch_size"]])
    scale = steps_per_epoch / (len(timed.x_train) // base["batch_size"])
    for name, overrides in models.items():
        fam = VAEFamily(VAEFamily.Config(seed=42, arch=args.arch, **base, **overrides), timed, torch.device("cpu"))
        c0, w0 = time.process_time(), time.perf_counter()
        fam.train_iteration(0)
        c1, w1 = time.process_time(), time.perf_counter()
        fam.evaluate(0)
        c2, w2 = time.process_time(), time.perf_counter()
        print(f"{name:9s} train epoch: {scale * (c1 - c0):6.1f} s CPU ({scale * (w1 - w0):6.1f} s wall)   "
              f"evaluate: {c2 - c1:5.1f} s CPU ({w2 - w1:5.1f} s wall)   load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
