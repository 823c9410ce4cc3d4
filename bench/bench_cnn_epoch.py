"""Seconds per epoch and accuracy of ``cnn_classifier`` configs on real Fashion-MNIST.

Runs the family directly (no Ray): for each config, ``--epochs`` epochs of
``train_iteration`` + ``evaluate``, printing per epoch the wall-clock and the process CPU
seconds of training and evaluation, and the test accuracy. On a shared machine the CPU seconds
(at ``--threads 1``) are the better estimate of an epoch on a free core; the load average is
printed with every line. Used to size the budget of ``tune_jobs/fashion_cnn.yaml``.

    python bench/bench_cnn_epoch.py --root /work/data --threads 1 --epochs 1
    python bench/bench_cnn_epoch.py --epochs 3 --config '{"n_blocks": 4, "filters": 64}'

Needs ``ROOT/FashionMNIST/raw`` (``bash shared/data/materialize.sh ROOT``).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from sweeplab.datasets.base import DataBundle
from sweeplab.families.cnn_classifier import CNNClassifier, CNNClassifierConfig

#: The configs whose epoch time sizes the sweep budget (batch 128).
DEFAULT_CONFIGS = [
    {"n_blocks": 4, "filters": 32, "norm": "batch"},
    {"n_blocks": 6, "filters": 64, "norm": "instance"},
    {"n_blocks": 2, "filters": 64, "norm": "batch"},
]


def load_fashion_mnist(root: str) -> DataBundle:
    """Fashion-MNIST from ``root/FashionMNIST/raw`` as a :class:`DataBundle` (via torchvision)."""
    from torchvision.datasets import FashionMNIST

    tr = FashionMNIST(root, train=True, download=False)
    te = FashionMNIST(root, train=False, download=False)
    return DataBundle(name="fashion_mnist",
                      x_train=tr.data.numpy()[:, None], y_train=tr.targets.numpy().astype(np.int64),
                      x_test=te.data.numpy()[:, None], y_test=te.targets.numpy().astype(np.int64),
                      num_classes=10, class_names=list(tr.classes))


def main() -> None:
    """Parse arguments, run every config, print one line per epoch and a summary table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/work/data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-fraction", type=float, default=1.0)
    ap.add_argument("--config", action="append", default=None,
                    help="JSON dict of CNNClassifierConfig fields (repeatable); default: the three budget configs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_fashion_mnist(args.root).subset(train_fraction=args.train_fraction)
    configs = [json.loads(c) for c in args.config] if args.config else DEFAULT_CONFIGS
    rows = []
    for raw in configs:
        cfg = CNNClassifierConfig.model_validate({"batch_size": args.batch_size, "epochs": args.epochs, **raw})
        torch.manual_seed(cfg.seed)
        fam = CNNClassifier(cfg, data, torch.device("cpu"))
        train_s, eval_s, res = [], [], {}
        for it in range(args.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            res = fam.train_iteration(it)
            t1, c1 = time.perf_counter(), time.process_time()
            res.update(fam.evaluate(it))
            t2, c2 = time.perf_counter(), time.process_time()
            train_s.append((t1 - t0, c1 - c0))
            eval_s.append((t2 - t1, c2 - c1))
            print(f"{raw} epoch {it + 1}: train {t1 - t0:.1f} s wall / {c1 - c0:.1f} s CPU, "
                  f"eval {t2 - t1:.1f} s wall / {c2 - c1:.1f} s CPU, "
                  f"train_loss {res['train_loss']:.4f}, test_loss {res['test_loss']:.4f}, "
                  f"test_accuracy {res['test_accuracy']:.4f}, load {os.getloadavg()[0]:.1f}", flush=True)
        tw, tc = np.median(np.array(train_s), axis=0)
        ew, ec = np.median(np.array(eval_s), axis=0)
        rows.append((json.dumps(raw), fam.extra_results()["num_params"], tw, tc, ew, ec, res["test_accuracy"]))
    print(f"\nFashion-MNIST, {len(data.y_train)} train / {len(data.y_test)} test, batch {args.batch_size}, "
          f"{args.threads} thread(s), {args.epochs} epoch(s)")
    print(f"{'config':70s} {'params':>8s} {'train s wall':>12s} {'train s CPU':>11s} "
          f"{'eval s wall':>11s} {'eval s CPU':>10s} {'test acc':>8s}")
    for name, p, tw, tc, ew, ec, acc in rows:
        print(f"{name:70s} {p:8d} {tw:12.1f} {tc:11.1f} {ew:11.1f} {ec:10.1f} {acc:8.4f}")


if __name__ == "__main__":
    main()
