"""A Bernoulli restricted Boltzmann machine trained by contrastive divergence (CD-k) or persistent CD.

Sources: Hinton 2002 ("Training products of experts by minimizing contrastive divergence", CD-k);
Tieleman 2008 ("Training restricted Boltzmann machines using approximations to the likelihood
gradient", persistent CD); scikit-learn's ``BernoulliRBM`` (the course report's script, see
``../shared/specs/ann_course.md`` §7), whose parameter layout, initialisation, update and
pseudo-likelihood this module follows exactly:

* energy ``E(v, h) = -v^T b - h^T c - h^T W v`` with ``W`` ``[H, D]`` (sklearn's ``components_``),
  ``c`` ``[H]`` (``intercept_hidden_``), ``b`` ``[D]`` (``intercept_visible_``); ``W ~ N(0, 0.01^2)``,
  biases zero;
* free energy ``F(v) = -v^T b - sum_j softplus(W_j v + c_j)``;
* pseudo-likelihood (sklearn's ``score_samples``): one feature ``i`` per sample flipped,
  ``v~_i = 1 - v_i``, and ``D * log sigmoid(F(v~) - F(v))`` (nats; higher is better);
* one update on a batch ``v+``: ``h+ = p(h | v+)`` (probabilities); the negative chain starts from
  the persistent hidden samples (``pcd``, one chain row per batch row, kept between batches) or from
  ``h ~ p(h | v+)`` (``cd``); ``k`` Gibbs steps ``v- ~ p(v | h)``, ``h- = p(h | v-)``, ``h ~ h-``;
  then ``W += lr (mean(h+ v+^T) - mean(h- v-^T))`` and the biases alike. PCD with ``k = 1`` on equal
  batches is sklearn's ``_fit`` step for step (the tests feed both the same uniforms).

Tensors are float64 on the CPU or a GPU; inputs are pixel intensities in [0, 1] (sklearn's script
scales pixels to [0, 1] too; non-binary values are used as Bernoulli means, as sklearn does).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: ``uniform(shape) -> tensor`` of U(0, 1) numbers: the only randomness of sampling and training.
Uniform = Callable[[tuple[int, ...]], torch.Tensor]


def torch_uniform(generator: torch.Generator, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float64) -> Uniform:
    """A :data:`Uniform` drawing from ``generator`` (a CPU generator; numbers moved to ``device``)."""
    return lambda shape: torch.rand(shape, generator=generator, dtype=dtype).to(device)


class BernoulliRBM(nn.Module):
    """Binary visible and hidden units (module docstring).

    Args:
        n_visible: D. n_hidden: H (sklearn's ``n_components``).
        generator: CPU RNG of the N(0, 0.01^2) initial weights.
        dtype: parameter dtype (float64 by default, as sklearn).

    Attributes:
        weight: ``[H, D]``. hidden_bias: ``[H]``. visible_bias: ``[D]``. Parameters without gradients:
        training is the explicit update of :meth:`cd_step`.
    """

    def __init__(self, n_visible: int, n_hidden: int, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        w = 0.01 * torch.randn(n_hidden, n_visible, generator=generator, dtype=dtype)
        self.weight = nn.Parameter(w, requires_grad=False)
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden, dtype=dtype), requires_grad=False)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible, dtype=dtype), requires_grad=False)

    @property
    def n_hidden(self) -> int:
        """H."""
        return int(self.weight.shape[0])

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h_j = 1 | v) = sigmoid(W v + c)``: ``[B, D] -> [B, H]``."""
        return torch.sigmoid(v @ self.weight.T + self.hidden_bias)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v_i = 1 | h) = sigmoid(W^T h + b)``: ``[B, H] -> [B, D]``."""
        return torch.sigmoid(h @ self.weight + self.visible_bias)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """``F(v) = -v^T b - sum_j softplus(W_j v + c_j)``: ``[B, D] -> [B]`` (sklearn's ``_free_energy``)."""
        return -(v @ self.visible_bias) - F.softplus(v @ self.weight.T + self.hidden_bias).sum(-1)

    def pseudo_likelihood(self, v: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """sklearn's ``score_samples`` with the flipped feature of each sample given.

        Args:
            v: ``[B, D]`` visible values in [0, 1].
            flip: ``[B]`` int64 index of the feature flipped (``1 - v``) in each sample.

        Returns:
            ``[B]`` ``D * log sigmoid(F(v~) - F(v))`` in nats.
        """
        rows = torch.arange(len(v), device=v.device)
        corrupted = v.clone()
        corrupted[rows, flip] = 1 - corrupted[rows, flip]
        return v.shape[1] * F.logsigmoid(self.free_energy(corrupted) - self.free_energy(v))

    def reconstruct(self, v: torch.Tensor) -> torch.Tensor:
        """One deterministic v -> h -> v pass on probabilities: ``p(v | p(h | v))``, ``[B, D]``."""
        return self.visible_probs(self.hidden_probs(v))

    def gibbs(self, v: torch.Tensor, steps: int, uniform: Uniform, clamp: torch.Tensor | None = None,
              snapshots: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """``steps`` block-Gibbs sweeps ``h ~ p(h | v)``, ``v ~ p(v | h)`` from ``v``.

        Args:
            v: ``[B, D]`` start. steps: sweeps. uniform: the random numbers.
            clamp: ``[B, D]`` or ``[D]`` bool, True where ``v`` is observed and kept (inpainting).
            snapshots: sweep counts after which ``p(v | h)`` is recorded.

        Returns:
            ``(p(v | h) after the last sweep with clamped entries kept, {step: p(v | h) at step})``.
        """
        probs, shots = v, {}
        for step in range(1, steps + 1):
            hp = self.hidden_probs(v)
            h = (uniform(tuple(hp.shape)) < hp).to(v.dtype)
            probs = self.visible_probs(h)
            sample = (uniform(tuple(probs.shape)) < probs).to(v.dtype)
            if clamp is not None:
                probs = torch.where(clamp, v, probs)
                sample = torch.where(clamp, v, sample)
            v = sample
            if step in snapshots:
                shots[step] = probs
        return probs, shots

    @torch.no_grad()
    def cd_step(self, v_pos: torch.Tensor, lr: float, uniform: Uniform, k: int = 1,
                chain: torch.Tensor | None = None) -> torch.Tensor:
        """One CD-k (``chain=None``) or persistent-CD-k update on a batch (module docstring).

        Args:
            v_pos: ``[B, D]`` data batch in [0, 1].
            lr: learning rate (sklearn's ``learning_rate``; the gradient is a batch mean).
            uniform: the random numbers, drawn in sklearn's order: per Gibbs step the visible
                ``[C, D]`` then the hidden ``[C, H]`` ones (``cd`` first draws ``[B, H]`` for its start).
            k: Gibbs steps of the negative chain.
            chain: ``[C, H]`` binary persistent hidden samples (PCD), or ``None`` for CD-k.

        Returns:
            The new ``[C, H]`` hidden samples (PCD's next chain state).
        """
        h_pos = self.hidden_probs(v_pos)
        if chain is None:
            chain = (uniform(tuple(h_pos.shape)) < h_pos).to(v_pos.dtype)
        h = chain
        for step in range(k):
            vp = self.visible_probs(h)
            v_neg = (uniform(tuple(vp.shape)) < vp).to(v_pos.dtype)
            h_neg = self.hidden_probs(v_neg)
            if step < k - 1:
                h = (uniform(tuple(h_neg.shape)) < h_neg).to(v_pos.dtype)
        n_pos, n_neg = len(v_pos), len(v_neg)
        self.weight += lr * (h_pos.T @ v_pos / n_pos - h_neg.T @ v_neg / n_neg)
        self.hidden_bias += lr * (h_pos.mean(0) - h_neg.mean(0))
        self.visible_bias += lr * (v_pos.mean(0) - v_neg.mean(0))
        return (uniform(tuple(h_neg.shape)) < h_neg).to(v_pos.dtype)


def inpaint(rbm: BernoulliRBM, v: torch.Tensor, missing: torch.Tensor, steps: int,
            uniform: Uniform) -> torch.Tensor:
    """Fill the ``missing`` pixels of ``v`` by Gibbs sampling with the observed ones clamped.

    The missing pixels start at 0 ("clamped out", the spec's proposal) and are resampled every
    sweep; the result holds ``p(v | h)`` of the last sweep on the missing pixels.

    Args:
        v: ``[B, D]`` images in [0, 1]. missing: ``[D]`` or ``[B, D]`` bool. steps: Gibbs sweeps (>= 1).

    Returns:
        ``[B, D]``: ``v`` on the observed pixels, the model's fill on the missing ones.
    """
    start = torch.where(missing, torch.zeros_like(v), v)
    filled, _ = rbm.gibbs(start, max(1, steps), uniform, clamp=~missing.expand_as(v))
    return filled


def row_mask(height: int, width: int, rows: int, position: str) -> torch.Tensor:
    """``[height * width]`` bool mask of ``rows`` whole image rows at ``position``.

    ``top``: rows ``0 .. rows-1``; ``bottom``: the last ``rows``; ``middle``: centred,
    starting at ``(height - rows) // 2``.

    Raises:
        ValueError: ``rows`` not in ``1 .. height``, or an unknown position.
    """
    if not 1 <= rows <= height:
        raise ValueError(f"rows to remove must be between 1 and the image height {height}, not {rows}")
    start = {"top": 0, "middle": (height - rows) // 2, "bottom": height - rows}.get(position)
    if start is None:
        raise ValueError(f"position must be top, middle or bottom, not {position!r}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[start:start + rows] = True
    return mask.reshape(-1)
