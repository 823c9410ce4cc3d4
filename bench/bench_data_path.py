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
The two sides alternate epoch by epoch (A B, B A, ...: ``bench/_pairs.py``, one warm-up pair
first); each figure is the median of the per-pair ratios DataLoader seconds / tensor-path
seconds (how many times faster the tensor path is; target >= 1: never slower), with its spread
and the load average. The main process uses ``--threads`` torch threads.

Uses ``ROOT/FashionMNIST/raw`` when present (``bash shared/data/materialize.sh ROOT``);
otherwise writes synthetic images of the same shape and count as IDX files into a temporary
folder so torchvision reads the same bytes as path (a).

    flock /tmp/sweeplab-cpu.lock python bench/bench_data_path.py --root /work/data --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import Target, interleave, report, timed  # noqa: E402


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
    """Interleave the tensor path with each DataLoader setting, per consumer, and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/work/data"))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=9,
                    help="epoch pairs per comparison, order alternating (3 left the 2-worker figures 20 %% apart run to run)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--consumers", nargs="+", default=["none", "tiny"], choices=["none", "tiny"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from torchvision import transforms
    from torchvision.datasets import FashionMNIST

    with tempfile.TemporaryDirectory() as tmp:
        root, source = prepare_root(args.root, Path(tmp))
        dataset = FashionMNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
        x = dataset.data.numpy()[:, None].copy()  # uint8 [N, 1, 28, 28], as a DataBundle holds it
        y = dataset.targets.numpy().astype(np.int64)
        print(f"one epoch of {len(y):,} samples, batch {args.batch_size}, {args.threads} thread(s) in the main "
              f"process; data: {source}")
        for consumer in args.consumers:
            model = tiny_model() if consumer == "tiny" else None
            for w in args.workers:
                print(f"\nconsumer {consumer}: DataLoader+ToTensor with {w} workers (A) vs tensor batches (B)")

                def ours(i: int, m=model) -> float:
                    return timed(lambda: epoch_tensor_path(x, y, args.batch_size, m, i))

                def loader(i: int, m=model, w=w) -> float:
                    return timed(lambda: epoch_dataloader(dataset, args.batch_size, w, m, i))

                p = interleave(loader, ours, args.pairs, warmup=1)
                report(f"DataLoader ({w} workers) / tensor path, s per epoch, consumer {consumer}", p.ratios,
                       Target(">=", 1.0), what=f"seconds per epoch: DataLoader {[round(a, 2) for a in p.a]}, "
                       f"tensor path {[round(b, 3) for b in p.b]} ({len(y) / statistics.median(p.b):,.0f} vs "
                       f"{len(y) / statistics.median(p.a):,.0f} samples/s)",
                       load_before=p.load_before, load_after=p.load_after)


if __name__ == "__main__":
    main()
