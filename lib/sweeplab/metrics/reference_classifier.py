"""The fixed reference classifier that judges generated images, trained once per dataset.

Generative image families (``gan``, ``vae``, ``vae_mnist``) need a classifier that labels their
samples (``class_coverage``, ``class_kl``) and embeds them (``fd_classifier``: the Fréchet
distance in its feature space; ``../shared/specs/ann_course.md`` §8). It must be the same
classifier for every trial of a sweep and never retrained per trial, so it is trained the first
time any trial asks for it and cached on disk under a key made from the dataset's contents (a
hash of every split's arrays) and the recipe's version; every later trial loads the cached weights.
Concurrent trials serialise on a file lock (``fcntl.flock``) next to the cache entry: the first one
trains while the others wait, then they all load the same file. Each training appends one line to
``<entry>.history`` (when, which process, seconds, test accuracy), so "trained once" can be checked.

The classifier is the ``cnn_classifier`` family's :class:`~sweeplab.models.cnn.ConvNet` (3 blocks
of 32 channels, BatchNorm, a 128-unit hidden layer whose ReLU output is the feature space), trained
with Adam (lr 1e-3, batch 128) for 3 epochs or 1,500 steps, whichever is fewer, on the training
split standardised by its own mean and std, with its own seeds: training it changes neither the
trial's RNG nor its results. On MNIST it reaches about 99 % test accuracy.

Cache folder: the family's ``reference_dir``, else ``$SWEEPLAB_CACHE_DIR/reference_classifiers``,
else ``~/.cache/sweeplab/reference_classifiers``. A folder that cannot be written means the
classifier is trained in memory for this trial only (with a warning).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sweeplab.metrics import samples as sm

log = logging.getLogger(__name__)

#: Bumped whenever the recipe (architecture, training, stored statistics) changes.
RECIPE_VERSION = 1
_ARCH = {"n_blocks": 3, "filters": 32, "norm": "batch", "head_hidden": 128}
_BATCH, _EPOCHS, _MAX_STEPS, _LR = 128, 3, 1500, 1e-3


def dataset_fingerprint(data: Any) -> str:
    """A hex digest of the bundle's name, class count and every split's arrays (shape, dtype,
    bytes): two bundles share it exactly when they hold the same data."""
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{data.name}|{data.num_classes}|v{RECIPE_VERSION}".encode())
    for arr in (data.x_train, data.y_train, data.x_test, data.y_test):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$SWEEPLAB_CACHE_DIR/reference_classifiers`` or ``~/.cache/sweeplab/reference_classifiers``."""
    base = os.environ.get("SWEEPLAB_CACHE_DIR") or Path.home() / ".cache" / "sweeplab"
    return Path(base).expanduser() / "reference_classifiers"


class ReferenceClassifier:
    """A trained, frozen classifier and the statistics of the real data in its eyes.

    Attributes:
        model: the :class:`~sweeplab.models.cnn.ConvNet` (eval mode).
        mean, std: per-channel input standardisation (training split), ``[1, C, 1, 1]``.
        prior: ``[K]`` class shares of the training labels.
        train_mu, train_cov: feature mean ``[F]`` and covariance ``[F, F]`` of the training split.
        test_pred, test_feat: predicted labels ``[N]`` and features ``[N, F]`` of the test split
            (the held-out real images of the ceilings), in a fixed shuffled order.
        test_accuracy: fraction of test images it classifies correctly.
        path: the cache entry, or ``None`` when trained in memory.
    """

    def __init__(self, state: dict[str, Any], in_shape: tuple[int, ...], num_classes: int,
                 path: Path | None = None) -> None:
        from sweeplab.models.cnn import ConvNet

        with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's RNG
            self.model = ConvNet(tuple(in_shape), num_classes, **_ARCH)
        self.model.load_state_dict(state["model"])
        self.model.eval().requires_grad_(False)
        self.mean, self.std = state["mean"], state["std"]
        self.prior = state["prior"].double().numpy()
        self.train_mu, self.train_cov = state["train_mu"].numpy(), state["train_cov"].numpy()
        self.test_pred, self.test_feat = state["test_pred"].numpy(), state["test_feat"].numpy()
        self.test_accuracy = float(state["test_accuracy"])
        self.num_classes, self.path = num_classes, path

    @torch.no_grad()
    def embed(self, images: torch.Tensor | np.ndarray, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``int64 [N]`` and features ``float64 [N, 128]`` of images ``[N, C, H, W]`` (uint8
        0..255 or float in [0, 1]), on the CPU."""
        x_all = torch.as_tensor(images)
        labels, feats = [], []
        for start in range(0, len(x_all), batch):
            x = x_all[start:start + batch]
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float().cpu()
            h = self.model.head[:-1](self.model.features((x - self.mean) / self.std))
            labels.append(self.model.head[-1](h).argmax(1))
            feats.append(h.double())
        return torch.cat(labels).numpy(), torch.cat(feats).numpy()

    def score(self, images: torch.Tensor | np.ndarray) -> dict[str, float]:
        """``class_coverage`` (classes with >= 1 % of the samples), ``class_kl`` (nats, to the
        training labels' shares) and ``fd_classifier`` (Fréchet distance of the samples'
        features to the training split's) of images ``[N, C, H, W]`` (N >= 2)."""
        labels, feats = self.embed(images)
        return self._metrics(labels, feats)

    def ceilings(self, n: int) -> dict[str, float]:
        """The same metrics of ``n`` held-out real test images (all of them if fewer): what a
        generator of perfect samples gets with ``n`` samples (the Fréchet distance is biased
        upwards by small ``n``, so compare at equal ``n``)."""
        n = max(2, min(int(n), len(self.test_pred)))
        return self._metrics(self.test_pred[:n], self.test_feat[:n])

    def _metrics(self, labels: np.ndarray, feats: np.ndarray) -> dict[str, float]:
        mu, cov = sm.gaussian_stats(feats)
        return {"class_coverage": float(sm.class_coverage(labels, self.num_classes)),
                "class_kl": sm.class_kl(labels, self.prior),
                "fd_classifier": sm.frechet_distance(mu, cov, self.train_mu, self.train_cov)}


def reference_classifier(data: Any, cache_dir: str | Path | None = None) -> ReferenceClassifier:
    """The reference classifier of ``data`` (a classification bundle of images): loaded from the
    cache, or trained once under a file lock and cached (see the module docstring).

    Raises:
        ValueError: data that is not labelled images with at least 2 classes.
    """
    if not getattr(data, "is_image", False) or (data.num_classes or 0) < 2 or (data.y_train < 0).any():
        raise ValueError(f"a reference classifier needs labelled images with >= 2 classes; dataset "
                         f"{data.name!r} has samples of shape {data.sample_shape}")
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = folder / f"{data.name}-{dataset_fingerprint(data)}.pt"
    shape, k = data.sample_shape, int(data.num_classes)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")
    except OSError as exc:
        log.warning("reference classifier: cannot write %s (%s); training it in memory for this trial", folder, exc)
        return ReferenceClassifier(train_reference(data), shape, k)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not path.exists():
            t0 = time.perf_counter()
            state = train_reference(data)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(state, tmp)
            os.replace(tmp, path)
            with open(path.with_suffix(".history"), "a") as hist:
                hist.write(json.dumps({"trained": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(),
                                       "host": socket.gethostname(), "seconds": round(time.perf_counter() - t0, 2),
                                       "test_accuracy": float(state["test_accuracy"])}) + "\n")
        state = torch.load(path, weights_only=True)
    return ReferenceClassifier(state, shape, k, path)


def train_reference(data: Any) -> dict[str, Any]:
    """Train the classifier on ``data`` with its own seeds (the caller's RNG state is untouched)
    and compute the real data's statistics; returns the cache entry's tensors."""
    from sweeplab.families.cnn_classifier import channel_stats
    from sweeplab.models.cnn import ConvNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        k = int(data.num_classes)
        mean, std = (t[None, :, None, None] for t in channel_stats(data.x_train))
        model = ConvNet(tuple(data.sample_shape), k, **_ARCH)
        opt = torch.optim.Adam(model.parameters(), lr=_LR)
        x_all, y_all = torch.as_tensor(np.asarray(data.x_train)), torch.as_tensor(np.asarray(data.y_train))
        steps = 0
        model.train()
        for _ in range(_EPOCHS):
            for idx in torch.randperm(len(x_all), generator=gen).split(_BATCH):
                if len(idx) < 2 or steps >= _MAX_STEPS:
                    continue
                x = x_all[idx]
                x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
                loss = F.cross_entropy(model((x - mean) / std), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
        state = {"model": model.state_dict(), "mean": mean, "std": std,
                 "prior": torch.as_tensor(sm.class_histogram(np.asarray(data.y_train), k))}
        ref = ReferenceClassifier({**state, **_EMPTY_STATS}, data.sample_shape, k)
        _, train_feat = ref.embed(np.asarray(data.x_train))
        order = torch.randperm(len(data.x_test), generator=gen).numpy()
        test_pred, test_feat = ref.embed(np.asarray(data.x_test)[order])
        mu, cov = sm.gaussian_stats(train_feat)
    return {**state, "train_mu": torch.as_tensor(mu), "train_cov": torch.as_tensor(cov),
            "test_pred": torch.as_tensor(test_pred), "test_feat": torch.as_tensor(test_feat).float(),
            "test_accuracy": torch.tensor(float((test_pred == np.asarray(data.y_test)[order]).mean()))}


_EMPTY_STATS = {"train_mu": torch.zeros(1), "train_cov": torch.zeros(1, 1), "test_pred": torch.zeros(0),
                "test_feat": torch.zeros(0), "test_accuracy": torch.tensor(0.0)}


def image_sample_metrics() -> tuple[Any, ...]:
    """The :class:`~sweeplab.metrics.convention.Metric` declarations every generative image
    family reports: the three sample metrics (measured on its generated samples), their
    ``<name>_ceiling`` (the same on held-out real test images, constant; the quantity's own
    direction) and
    ``reference_accuracy`` (the reference classifier's test accuracy)."""
    from sweeplab.metrics.convention import Metric

    quality = (
        Metric("class_coverage", "max", "count", "classes holding >= 1 % of the generated samples, as the "
                                                 "reference classifier labels them (ann_course spec §8)"),
        Metric("class_kl", "min", "nats", "KL(class histogram of the samples || training label shares)"),
        Metric("fd_classifier", "min", "ratio", "Frechet distance of the samples' reference-classifier "
                                                "features to the training images' (squared feature units; "
                                                "not Inception's FID)"),
    )
    ceilings = tuple(Metric(f"{m.name}_ceiling", m.mode, m.unit, f"{m.name} of as many held-out real test "
                            "images (a perfect generator's value)") for m in quality)
    return (*quality, *ceilings, Metric("reference_accuracy", "max", "fraction",
                                        "test accuracy of the reference classifier"))
