"""The in-memory dataset every trainable receives, and the dataset registry.

A sweep reads its dataset exactly once, in the driver, into a :class:`DataBundle` of NumPy
arrays. The runner hands the bundle to every trial through Ray's object store
(``tune.with_parameters``): NumPy arrays in the object store are shared zero-copy between the
trial processes of a node, so no trial re-reads or re-decodes a file.

Adding a dataset means one module in ``sweeplab/datasets/`` with a function decorated by
:func:`register_dataset`; nothing else changes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np


class DatasetError(ValueError):
    """A dataset could not be read: a missing root, a missing or truncated file, a bad option.

    The message always names the file or field and says how to fix it.
    """


@dataclasses.dataclass
class DataBundle:
    """A whole dataset held in memory as NumPy arrays.

    Attributes:
        name: registered dataset name, e.g. ``"fashion_mnist"``.
        x_train: ``uint8`` array of shape ``[N_train, C, H, W]`` (images, raw 0..255 pixel values)
            or ``float32`` ``[N_train, D]`` (tabular data). Read-only when it comes from the
            object store: trials must not write into it.
        y_train: ``int64`` array ``[N_train]`` of class labels (``-1`` where a dataset has none).
        x_test, y_test: the same for the held-out test split.
        x_val, y_val: an optional validation split carved from the training data
            (``data.val_fraction`` in the job spec), or ``None``.
        num_classes: number of label classes ``C`` (labels lie in ``0..C-1``).
        class_names: one name per class, or ``None``.
        meta: free-form facts about the data (source path, attribute name, pixel levels ...).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str] | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)`` for MNIST."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        """True for ``[N, C, H, W]`` image data."""
        return self.x_train.ndim == 4

    def nbytes(self) -> int:
        """Total bytes held by the arrays (what the object store carries)."""
        arrays = [self.x_train, self.y_train, self.x_test, self.y_test, self.x_val, self.y_val]
        return int(sum(a.nbytes for a in arrays if a is not None))

    def split_validation(self, fraction: float, seed: int = 0) -> "DataBundle":
        """Carve a validation split off the training data (stratified when labels exist).

        Args:
            fraction: share of the training samples moved to validation, in ``[0, 1)``.
            seed: seed of the permutation, so every trial of a sweep sees the same split.

        Returns:
            A new bundle with ``x_val``/``y_val`` set and the training arrays reduced;
            ``self`` when ``fraction == 0``.

        Raises:
            DatasetError: if the fraction leaves no training or no validation samples.
        """
        if fraction <= 0:
            return self
        n = len(self.x_train)
        n_val = int(round(n * fraction))
        if n_val < 1 or n_val >= n:
            raise DatasetError(
                f"data.val_fraction={fraction} leaves {n_val} of {n} training samples for "
                "validation; choose a fraction that keeps at least one sample on each side"
            )
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        return dataclasses.replace(
            self,
            x_train=self.x_train[train_idx],
            y_train=self.y_train[train_idx],
            x_val=self.x_train[val_idx],
            y_val=self.y_train[val_idx],
        )

    def subset(self, train_fraction: float = 1.0, test_fraction: float = 1.0,
               seed: int = 0) -> "DataBundle":
        """Keep a random share of the train and test splits, for fast low-fidelity sweeps.

        Args:
            train_fraction: share of training samples kept, in ``(0, 1]``.
            test_fraction: share of test samples kept, in ``(0, 1]``.
            seed: seed of the selection (the same for every trial of a sweep).

        Returns:
            A new bundle (``self`` when both fractions are 1).
        """
        if train_fraction >= 1.0 and test_fraction >= 1.0:
            return self
        rng = np.random.default_rng(seed)

        def pick(x: np.ndarray, y: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray]:
            if frac >= 1.0:
                return x, y
            keep = max(1, int(round(len(x) * frac)))
            idx = np.sort(rng.permutation(len(x))[:keep])
            return x[idx], y[idx]

        x_train, y_train = pick(self.x_train, self.y_train, train_fraction)
        x_test, y_test = pick(self.x_test, self.y_test, test_fraction)
        return dataclasses.replace(self, x_train=x_train, y_train=y_train,
                                   x_test=x_test, y_test=y_test)


#: A dataset reader: ``loader(root, **options) -> DataBundle``.
Loader = Callable[..., DataBundle]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its reader and what it needs."""

    name: str
    loader: Loader
    needs_root: bool
    description: str


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, *, needs_root: bool = True, description: str = "") -> Callable[[Loader], Loader]:
    """Class the decorated function as the reader of dataset ``name``.

    The function is called as ``loader(root: Path | None, download: bool, **options)`` and
    returns a :class:`DataBundle`; it raises :class:`DatasetError` with a message naming the
    missing or broken file.

    Raises:
        ValueError: if ``name`` is registered twice.
    """

    def decorate(fn: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = DatasetInfo(name, fn, needs_root, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return decorate


def dataset_names() -> list[str]:
    """Names of every registered dataset, sorted."""
    from sweeplab import datasets  # noqa: F401  (imports every dataset module)

    return sorted(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The registration of dataset ``name``.

    Raises:
        DatasetError: for an unknown name, listing the known ones.
    """
    names = dataset_names()
    if name not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(names)}")
    return _REGISTRY[name]


def load_dataset(name: str, root: str | Path | None = None, *, download: bool = False,
                 options: dict[str, Any] | None = None) -> DataBundle:
    """Read dataset ``name`` from ``root`` into memory.

    Args:
        name: a registered dataset name (see :func:`dataset_names`).
        root: folder holding the dataset in its standard layout (what
            ``shared/data/materialize.sh`` writes); ignored by datasets that ship with a package.
        download: let torchvision download the files when they are missing (needs internet).
        options: dataset-specific options (e.g. ``attribute`` and ``image_size`` for CelebA).

    Raises:
        DatasetError: unknown name, missing root, missing/truncated/corrupt files, bad options.
    """
    info = dataset_info(name)
    root_path: Path | None = None
    if info.needs_root:
        if root is None:
            raise DatasetError(f"dataset {name!r} needs data.root: the folder that holds its files")
        root_path = Path(root).expanduser()
        if not root_path.is_dir() and not download:
            raise DatasetError(
                f"data.root {str(root_path)!r} does not exist; point it at the folder filled by "
                "shared/data/materialize.sh, or set data.download: true where there is internet"
            )
    try:
        return info.loader(root_path, download=download, **(options or {}))
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise DatasetError(f"data.options for {name!r}: {exc}") from None
        raise
