"""Classification metrics on torch tensors.

Accuracy is the fraction of samples whose predicted class equals the label (a number in
[0, 1], never a percentage); it agrees with ``sklearn.metrics.accuracy_score`` (the tests
check this). It is computed in torch so that a training loop can count correct predictions
batch by batch without moving logits to NumPy.
"""
from __future__ import annotations

import torch


def predicted_labels(scores: torch.Tensor) -> torch.Tensor:
    """Class predictions from scores.

    Args:
        scores: ``[N, C]`` logits/probabilities (argmax over ``C``; ties go to the lowest
            index) or ``[N]`` integer labels, returned unchanged.

    Returns:
        ``int64`` tensor ``[N]``.

    Raises:
        ValueError: if ``scores`` is neither 1-D nor 2-D.
    """
    if scores.ndim == 2:
        return scores.argmax(dim=1)
    if scores.ndim == 1:
        return scores.long()
    raise ValueError(f"scores must be [N, C] or [N], got shape {tuple(scores.shape)}")


def correct_count(scores: torch.Tensor, targets: torch.Tensor) -> int:
    """Number of samples whose predicted class equals the target.

    Args:
        scores: ``[N, C]`` scores or ``[N]`` predicted labels (see :func:`predicted_labels`).
        targets: ``[N]`` integer class labels.

    Raises:
        ValueError: if the sample counts differ or the shapes are not as above.
    """
    pred = predicted_labels(scores)
    if targets.ndim != 1 or pred.shape[0] != targets.shape[0]:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} "
                         "must hold the same number of samples, targets as [N]")
    return int((pred == targets.to(pred.device)).sum().item())


def accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of correctly classified samples, in [0, 1].

    Args:
        scores: ``[N, C]`` logits/probabilities or ``[N]`` predicted labels.
        targets: ``[N]`` integer class labels.

    Raises:
        ValueError: for mismatched shapes or ``N == 0`` (accuracy of nothing is undefined).
    """
    n = targets.shape[0] if targets.ndim else 0
    if n == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return correct_count(scores, targets) / n
