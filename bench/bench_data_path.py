"""Samples per second of sweeplab's tensor batch path vs a standard torchvision DataLoader.

Both paths iterate one full epoch of the Fashion-MNIST training split (60,000 28x28 images) in
shuffled batches, on the same data, in the same run:

(a) ``tensor``: the uint8 array held in memory (as a DataBundle holds it), index batches from
    ``sweeplab.kit.tensors.batches`` and ``to_float_images`` per batch (what
    ``cnn_classifier`` does);
(b) ``DataLoader``: ``torchvision.datasets.FashionMNIST(root, transform=ToTensor())`` in a
    ``torch.utils.data.DataLoader`` (per-sample PIL conversion and ToTensor, default
    collation), with ``num_workers`` 0 and 2.

Each path runs with no model (``consumer=none``: only the data) and feeding a tiny forward
pass (``consumer=tiny``: Conv2d(1, 8, 3) -> ReLU -> MaxPool -> Linear, in inference mode), so the
table shows both the raw data cost and how much of it remains visible next to a small model.
Times are wall-clock seconds of one epoch (best of ``--repeats``); the main process uses
``--threads`` torch threads.

Uses ``ROOT/FashionMNIST/raw`` when present (``bash shared/data/materialize.sh ROOT``);
otherwise writes synthetic images of the same shape and count as IDX files into a temporary
folder so torchvision reads the same bytes as path (a).

    python bench/bench_data_path.py --root /work/data --threads 1
"""
from __future__ import annotations

import argparse
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str) -> None:
    """Write ``uint8 [N, H, W]`` images and ``[N]`` labels as unpacked IDX files
    (``{prefix}-images-idx3-ubyte`` / ``{prefix}-labels-idx1-ubyte``), the layout torchvision's
    FashionMNIST reads from ``root/FashionMNIST/raw``."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def prepare_root(root: Path | None, tmp: Path) -> tuple[Path, str]:
    """A root torchvision's FashionMNIST can read: ``root`` if it holds the real files,
    else a synthetic copy of the same shape under ``tmp``. Returns ``(root, description)``."""
    if root is not None and (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists():
        return root, f"real Fashion-MNIST from {root}"
    rng = np.random.default_rng(0)
    raw = tmp / "FashionMNIST" / "raw"
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        write_idx(raw, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n), prefix)
    return tmp, "SYNTHETIC uint8 images of Fashion-MNIST's shape (real files not found)"


def tiny_model() -> nn.Module:
    """The tiny consumer: ``[B, 1, 28, 28] -> [B, 10]``."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 14 * 14, 10)).eval()


def epoch_tensor_path(x: np.ndarray, y: np.ndarray, batch_size: int, model: nn.Module | None,
                      seed: int) -> int:
    """One shuffled epoch on the tensor batch path; returns the number of samples seen."""
    from sweeplab.kit.tensors import batches, shared_tensor, to_float_images

    xt, yt = shared_tensor(x), shared_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    cpu = torch.device("cpu")
    seen = 0
    with torch.inference_mode():
        for idx in batches(len(yt), batch_size, shuffle=True, generator=gen):
            xb = to_float_images(xt[idx], cpu)
            yb = yt[idx]
            if model is not None:
                model(xb)
            seen += len(yb)
    return seen


def epoch_dataloader(dataset, batch_size: int, workers: int, model: nn.Module | None, seed: int) -> int:
    """One shuffled epoch through a torchvision-style DataLoader; returns samples seen."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed),
                        persistent_workers=False)
    seen = 0
    with torch.inference_mode():
        for xb, yb in loader:
            if model is not None:
                model(xb)
            seen += len(yb)
    return seen


def main() -> None:
    """Run every (path, consumer) pair ``--repeats`` times and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/work/data"))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from torchvision import transforms
    from torchvision.datasets import FashionMNIST

    with tempfile.TemporaryDirectory() as tmp:
        root, source = prepare_root(args.root, Path(tmp))
        dataset = FashionMNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
        x = dataset.data.numpy()[:, None].copy()  # uint8 [N, 1, 28, 28], as a DataBundle holds it
        y = dataset.targets.numpy().astype(np.int64)
        runs = []
        for consumer in ("none", "tiny"):
            model = tiny_model() if consumer == "tiny" else None
            paths = [("tensor batches (ours)", lambda s, m=model: epoch_tensor_path(x, y, args.batch_size, m, s))]
            for w in args.workers:
                paths.append((f"DataLoader+ToTensor, {w} workers",
                              lambda s, m=model, w=w: epoch_dataloader(dataset, args.batch_size, w, m, s)))
            for name, fn in paths:
                best = float("inf")
                for r in range(args.repeats):
                    t0 = time.perf_counter()
                    n = fn(r)
                    best = min(best, time.perf_counter() - t0)
                assert n == len(y), (name, n)
                runs.append((consumer, name, best, n / best))
                print(f"  {consumer:5s} {name:32s} {best:8.2f} s  {n / best:12,.0f} samples/s", flush=True)

    print(f"\nOne epoch of {len(y):,} samples, batch {args.batch_size}, {args.threads} thread(s) in the "
          f"main process, best of {args.repeats}; load average {os.getloadavg()[0]:.1f}; data: {source}")
    print(f"{'consumer':9s} {'path':32s} {'s/epoch':>9s} {'samples/s':>12s} {'ours is x faster':>17s}")
    for consumer, name, sec, rate in runs:
        ours = next(r for c, nm, _, r in runs if c == consumer and nm.startswith("tensor"))
        print(f"{consumer:9s} {name:32s} {sec:9.2f} {rate:12,.0f} {ours / rate:17.1f}")


if __name__ == "__main__":
    main()
