"""The in-memory dataset every trainable receives, and the dataset registry.

A sweep reads its dataset exactly once, in the driver, into a :class:`DataBundle` of NumPy
arrays. The runner hands the bundle to every trial through Ray's object store
(``tune.with_parameters``): NumPy arrays in the object store are shared zero-copy between the
trial processes of a node, so no trial re-reads, re-decodes or re-generates anything.

One bundle carries every kind of data a family trains on (:data:`TASKS`): labelled images or
vectors (``classification``), float targets with one or more outputs (``regression``), a time
series that the family cuts into windows itself (``series``, see :func:`windows`), and data
without labels (``unlabelled``). A synthetic generator is a dataset like any other whose samples
are fixed by the job's ``data.data_seed`` (registered with ``seeded=True``), kept apart from the
training seed so that a configuration's repeats share one dataset.

Adding a dataset means one module in ``sweeplab/datasets/`` with a function decorated by
:func:`register_dataset`; nothing else changes.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: The kinds of data a bundle can hold.
TASKS = ("classification", "regression", "series", "unlabelled")


class DatasetError(ValueError):
    """A dataset could not be read: a missing root, a missing or truncated file, a bad option.

    The message always names the file or field and says how to fix it.
    """


@dataclasses.dataclass
class DataBundle:
    """A whole dataset held in memory as NumPy arrays.

    Attributes:
        name: registered dataset name, e.g. ``"fashion_mnist"``.
        x_train: the training inputs. Images: ``uint8 [N, C, H, W]`` (raw 0..255) or float
            ``[N, C, H, W]`` in [0, 1]; vectors: ``float32 [N, D]``; a series: ``float32 [T, D]``
            (time along axis 0). Read-only when it comes from the object store.
        y_train: ``classification``: ``int64 [N]`` class labels in ``0..C-1`` (``-1`` where a
            sample has no label); ``regression``: float ``[N]`` or ``[N, K]`` targets;
            ``series`` and ``unlabelled``: ``None``.
        x_test, y_test: the same for the held-out test split (a series: the continuation).
        num_classes: ``C`` for classification, else ``None``.
        class_names: one name per class, or ``None``.
        x_val, y_val: an optional validation split carved from the training data
            (``data.val_fraction``, :meth:`split_validation`), or ``None``.
        meta: free-form facts about the data (source path, generator parameters, scaling ...).
        task: one of :data:`TASKS`; inferred when not given: ``unlabelled`` without labels,
            ``classification`` with ``num_classes``, ``regression`` with float targets.

    Raises:
        DatasetError: a task that does not match the arrays (label dtype, lengths, num_classes).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    num_classes: int | None = None
    class_names: list[str] | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    task: str = ""

    def __post_init__(self) -> None:
        if not self.task:
            self.task = self._infer_task()
        if self.task not in TASKS:
            raise DatasetError(f"dataset {self.name!r}: task {self.task!r} is not one of {', '.join(TASKS)}")
        splits = [("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)]
        if self.x_val is not None:
            splits.append(("val", self.x_val, self.y_val))
        for split, x, y in splits:
            self._check_split(split, x, y)

    def _infer_task(self) -> str:
        if self.y_train is None:
            return "unlabelled"
        if self.num_classes is not None:
            return "classification"
        if np.issubdtype(np.asarray(self.y_train).dtype, np.floating):
            return "regression"
        raise DatasetError(f"dataset {self.name!r}: integer labels need num_classes (classification), "
                           "or give float targets for regression")

    def _check_split(self, split: str, x: np.ndarray, y: np.ndarray | None) -> None:
        where = f"dataset {self.name!r} ({self.task}), {split} split"
        labelled = self.task in ("classification", "regression")
        if labelled and (y is None or len(y) != len(x)):
            raise DatasetError(f"{where}: needs one target per sample ({len(x)} samples, "
                               f"{'no' if y is None else len(y)} targets)")
        if not labelled and y is not None:
            raise DatasetError(f"{where}: has targets; a {self.task} bundle holds inputs only")
        if self.task == "classification":
            if self.num_classes is None or not np.issubdtype(y.dtype, np.integer):
                raise DatasetError(f"{where}: needs integer labels and num_classes")
        elif self.task == "regression" and not np.issubdtype(y.dtype, np.floating):
            raise DatasetError(f"{where}: regression targets must be float, not {y.dtype}")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (one time step of a series), e.g. ``(1, 28, 28)`` for MNIST."""
        return tuple(self.x_train.shape[1:])

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one regression target (``()`` for a scalar target); ``()`` otherwise."""
        return tuple(self.y_train.shape[1:]) if self.task == "regression" else ()

    @property
    def is_image(self) -> bool:
        """True for ``[N, C, H, W]`` image data."""
        return self.x_train.ndim == 4

    @property
    def labelled(self) -> bool:
        """True when the bundle has targets (classification or regression)."""
        return self.y_train is not None

    def nbytes(self) -> int:
        """Total bytes held by the arrays (what the object store carries)."""
        arrays = [self.x_train, self.y_train, self.x_test, self.y_test, self.x_val, self.y_val]
        return int(sum(a.nbytes for a in arrays if a is not None))

    def split_validation(self, fraction: float, seed: int = 0) -> "DataBundle":
        """Carve a validation split off the training data.

        Classification: stratified by class (``sklearn.model_selection.train_test_split``),
        when every class present has at least two samples and no label is missing; otherwise,
        and for regression and unlabelled data, a seeded random permutation. A series: its last
        ``fraction`` of time steps (a random cut would leak the future into training).

        Args:
            fraction: share of the training samples (time steps) moved to validation, in ``[0, 1)``.
            seed: seed of the split, so every trial of a sweep sees the same one.

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
                "validation; choose a fraction that keeps at least one sample on each side")
        if self.task == "series":
            return dataclasses.replace(self, x_train=self.x_train[: n - n_val], x_val=self.x_train[n - n_val:])
        train_idx, val_idx = self._validation_indices(n, n_val, seed)
        take = (lambda a, i: None if a is None else a[i])
        return dataclasses.replace(self, x_train=self.x_train[train_idx], y_train=take(self.y_train, train_idx),
                                   x_val=self.x_train[val_idx], y_val=take(self.y_train, val_idx))

    def _validation_indices(self, n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted (train, validation) indices: stratified where :meth:`split_validation` says."""
        y = self.y_train
        if self.task == "classification" and (y >= 0).all():
            counts = np.bincount(y)
            n_classes = int((counts > 0).sum())
            if counts[counts > 0].min() >= 2 and n_classes <= n_val <= n - n_classes:
                from sklearn.model_selection import train_test_split

                train_idx, val_idx = train_test_split(np.arange(n), test_size=n_val, stratify=y,
                                                      random_state=seed)
                return np.sort(train_idx), np.sort(val_idx)
        perm = np.random.default_rng(seed).permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def subset(self, train_fraction: float = 1.0, test_fraction: float = 1.0,
               seed: int = 0) -> "DataBundle":
        """Keep a random share of the train and test splits, for fast low-fidelity sweeps
        (a series keeps its first share of time steps).

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

        def pick(x: np.ndarray, y: np.ndarray | None, frac: float):
            if frac >= 1.0:
                return x, y
            keep = max(1, int(round(len(x) * frac)))
            idx = np.arange(keep) if self.task == "series" else np.sort(rng.permutation(len(x))[:keep])
            return x[idx], (None if y is None else y[idx])

        x_train, y_train = pick(self.x_train, self.y_train, train_fraction)
        x_test, y_test = pick(self.x_test, self.y_test, test_fraction)
        return dataclasses.replace(self, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def windows(series: np.ndarray, lookback: int, horizon: int = 1, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cut a series into (input window, following values) pairs for forecasting, without copying.

    Args:
        series: ``[T]`` or ``[T, D]`` values, time along axis 0.
        lookback: time steps in each input window (``p`` of an AR(p) model).
        horizon: time steps to predict after each window.
        stride: time steps between the starts of consecutive windows.

    Returns:
        ``(inputs [N, lookback, D], targets [N, horizon, D])`` with
        ``N = (T - lookback - horizon) // stride + 1``; read-only views of ``series``
        (``numpy.lib.stride_tricks.sliding_window_view``). A ``[T]`` series gives ``D = 1``.

    Raises:
        DatasetError: a lookback, horizon or stride below 1, or a series shorter than
            ``lookback + horizon``.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    if lookback < 1 or horizon < 1 or stride < 1:
        raise DatasetError(f"windows: lookback ({lookback}), horizon ({horizon}) and stride ({stride}) must be >= 1")
    s = series[:, None] if series.ndim == 1 else series
    if len(s) < lookback + horizon:
        raise DatasetError(f"windows: a series of {len(s)} steps is shorter than lookback + horizon "
                           f"({lookback} + {horizon})")
    view = sliding_window_view(s, lookback + horizon, axis=0)[::stride]  # [N, D, lookback + horizon]
    view = np.moveaxis(view, -1, 1)  # [N, lookback + horizon, D]
    return view[:, :lookback], view[:, lookback:]


#: A dataset reader: ``loader(root, **options) -> DataBundle``.
Loader = Callable[..., DataBundle]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its reader and what it needs.

    Attributes:
        seeded: a generator whose samples ``data.data_seed`` fixes (passed as ``data_seed=``).
    """

    name: str
    loader: Loader
    needs_root: bool
    description: str
    seeded: bool = False


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, *, needs_root: bool = True, description: str = "",
                     seeded: bool = False) -> Callable[[Loader], Loader]:
    """Class the decorated function as the reader of dataset ``name``.

    The function is called as ``loader(root: Path | None, download: bool, **options)`` (plus
    ``data_seed=`` when ``seeded``: a generator) and returns a :class:`DataBundle`; it raises
    :class:`DatasetError` with a message naming the missing or broken file or option.

    Raises:
        ValueError: if ``name`` is registered twice.
    """

    def decorate(fn: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        if seeded and "data_seed" not in inspect.signature(fn).parameters:
            raise ValueError(f"dataset {name!r} is seeded but its loader takes no data_seed argument")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = DatasetInfo(name, fn, needs_root, doc, seeded)
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
                 options: dict[str, Any] | None = None, data_seed: int | None = None) -> DataBundle:
    """Read dataset ``name`` from ``root`` into memory.

    Args:
        name: a registered dataset name (see :func:`dataset_names`).
        root: folder holding the dataset in its standard layout (what
            ``shared/data/materialize.sh`` writes); ignored by datasets that ship with a package.
        download: let torchvision download the files when they are missing (needs internet).
        options: dataset-specific options (e.g. ``attribute`` and ``image_size`` for CelebA).
        data_seed: seed of a generated dataset's samples (``seeded`` datasets only; default 0).

    Raises:
        DatasetError: unknown name, missing root, missing/truncated/corrupt files, bad options,
            a ``data_seed`` for a dataset read from files.
    """
    info = dataset_info(name)
    extra: dict[str, Any] = {}
    if info.seeded:
        extra["data_seed"] = int(data_seed or 0)
    elif data_seed:
        raise DatasetError(f"data.data_seed={data_seed}: dataset {name!r} is read as it is, not generated; "
                           "remove data_seed (data.subset_seed picks subsets and validation splits)")
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
        return info.loader(root_path, download=download, **(options or {}), **extra)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise DatasetError(f"data.options for {name!r}: {exc}") from None
        raise
