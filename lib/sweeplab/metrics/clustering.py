"""Clustering metrics of the conjugated mixture model (``shared/specs/variational_mnist.md``).

Plain functions on NumPy arrays / tensors: ``nmi``, ``cluster_accuracy``, ``active_clusters`` and
``conjugation_r2``. Labels and cluster assignments are integer arrays of shape ``[N]``; the
assignment of an image is ``argmax_k q(k|x)``.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

__all__ = ["nmi", "cluster_accuracy", "active_clusters", "conjugation_r2"]


def _as_int_array(a, name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integers, got shape {arr.shape}")
    return arr


def _check_pair(labels, assignments) -> tuple[np.ndarray, np.ndarray]:
    y, c = _as_int_array(labels, "labels"), _as_int_array(assignments, "assignments")
    if len(y) != len(c):
        raise ValueError(f"labels ({len(y)}) and assignments ({len(c)}) differ in length")
    if len(y) == 0:
        raise ValueError("labels and assignments are empty")
    return y, c


def nmi(labels, assignments) -> float:
    """Normalized mutual information between true labels and cluster assignments.

    ``NMI = I(Y; C) / mean(H(Y), H(C))`` (arithmetic mean), computed by scikit-learn's
    ``normalized_mutual_info_score``; 1 for a clustering that matches the labels up to a
    renaming of clusters, about 0 for an independent one. Source: ``shared/specs/variational_mnist.md``.

    Args:
        labels: ``[N]`` integer class labels.
        assignments: ``[N]`` integer cluster indices (``argmax_k q(k|x)``).

    Returns:
        A float in [0, 1] (unitless).

    Raises:
        ValueError: for arrays of different lengths, empty or not 1-D.
    """
    y, c = _check_pair(labels, assignments)
    return float(normalized_mutual_info_score(y, c))


def cluster_accuracy(labels, assignments) -> float:
    """Accuracy after mapping every cluster to its majority label (many clusters may share a label).

    ``acc = (1/N) Σ_c max_y |{i : C_i = c, Y_i = y}|``: the usual clustering score when there are
    more clusters than classes (overclustering). Source: ``shared/specs/variational_mnist.md``
    ("cluster_accuracy").

    Args:
        labels: ``[N]`` integer class labels.
        assignments: ``[N]`` integer cluster indices.

    Returns:
        A fraction in [0, 1] (not percent).

    Raises:
        ValueError: for arrays of different lengths, empty or not 1-D.
    """
    y, c = _check_pair(labels, assignments)
    table = contingency_matrix(y, c)  # [classes, clusters]
    return float(table.max(axis=0).sum() / len(y))


def active_clusters(assignments, n_clusters: int | None = None) -> int:
    """Number of clusters that at least one sample is assigned to (by ``argmax``).

    Source: ``shared/specs/variational_mnist.md`` ("active_clusters").

    Args:
        assignments: ``[N]`` integer cluster indices.
        n_clusters: if given, indices must lie in ``0..n_clusters-1``.

    Returns:
        An integer in ``1..min(N, K)``.

    Raises:
        ValueError: for a non-1-D array or an index out of range.
    """
    c = _as_int_array(assignments, "assignments")
    if n_clusters is not None and len(c) and (c.min() < 0 or c.max() >= n_clusters):
        raise ValueError(f"cluster indices must lie in 0..{n_clusters - 1}")
    return int(len(np.unique(c)))


def conjugation_r2(f, psi, clip_min: float = -10.0) -> float:
    """How well the conjugation approximation ``ψ_X(η(y,k)) ≈ ρ·y + const`` holds.

    ``R² = clip(1 − Var[f] / Var[ψ_X(η)], clip_min, 1)`` with ``f(y,k) = ρ·y − ψ_X(η(y,k))``,
    both evaluated at the same samples ``(y, k) ~ p(y, k)`` of the prior (the spec uses 10,000).
    1 means exactly conjugate (``f`` constant), 0 means ``ρ·y`` explains none of ``ψ``'s
    variance. Source: ``shared/specs/variational_mnist.md`` ("r2").

    Args:
        f: ``[N]`` residuals ``f`` at the prior samples (nats).
        psi: ``[N]`` log-partitions ``ψ_X(η)`` at the same samples (nats).
        clip_min: lower clip (−10 in the spec).

    Returns:
        A float in ``[clip_min, 1]``. When ``Var[ψ] = 0``: 1 if ``Var[f] = 0`` too, else ``clip_min``.

    Raises:
        ValueError: for arrays of different lengths or fewer than 2 samples.
    """
    f_arr = f.detach().double().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, float)
    p_arr = psi.detach().double().cpu().numpy() if isinstance(psi, torch.Tensor) else np.asarray(psi, float)
    if f_arr.shape != p_arr.shape or f_arr.ndim != 1:
        raise ValueError(f"f and psi must be 1-D of the same length, got {f_arr.shape} and {p_arr.shape}")
    if len(f_arr) < 2:
        raise ValueError("conjugation_r2 needs at least 2 samples")
    var_f, var_psi = float(np.var(f_arr)), float(np.var(p_arr))
    if var_psi == 0.0:
        return 1.0 if var_f == 0.0 else float(clip_min)
    return float(np.clip(1.0 - var_f / var_psi, clip_min, 1.0))
