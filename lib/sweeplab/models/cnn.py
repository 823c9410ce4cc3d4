"""A configurable plain convolutional image classifier (no skip connections).

Source: the "CNNblocks" model of the Fashion-MNIST experiment journal
(``shared/seeds/fashion_cnn_journal.md``): ``n_blocks`` convolutional blocks of ``filters``
channels, each laid out as

    Conv2d -> Norm -> ReLU -> Dropout2d -> [MaxPool2d]

(the journal's placement, "Conv -> Norm -> ReLU -> Dropout2D -> Pool"), followed by a
classifier head on the flattened feature map. The journal does not state where its poolings
go nor its head, and its parameter counts are not mutually consistent (the same 4-block,
32-filter net is listed with 93,130 and with 832,298 parameters), so those two choices are ours
and are documented here; the parameter counts of this module do not match the journal's.

Pooling (``MaxPool2d(2, ceil_mode=True)``) is placed so that every input size works with every
depth from 1 to 8 blocks:

* The number of poolings is ``min(n_blocks, max_pools(H, W))``, where :func:`max_pools` is the
  number of halvings that keep the smaller side at 3 pixels or more (``ceil`` rounding, so no
  row or column is ever dropped). A map is never pooled below 3x3.
* ``pooling="early"`` (default) pools after each of the first blocks; the remaining blocks run
  on the smallest map. Deep nets then stay cheap on a CPU: the extra blocks cost almost nothing
  because they work on a 4x4 map. ``pooling="even"`` spreads the poolings evenly over the
  blocks (VGG style; more compute at full resolution), the last one after the last block.

Resulting shapes with ``pooling="early"`` (``F`` = ``filters``, growth 1, ``n`` = ``n_blocks``):

* 8x8x1 (scikit-learn digits): 1 pooling (8->4); the head sees ``[F, 4, 4]`` for every n.
* 28x28x1 (MNIST, Fashion-MNIST): ``min(n, 3)`` poolings (28->14->7->4); the head sees
  ``[F, 14, 14]`` for n=1, ``[F, 7, 7]`` for n=2, ``[F, 4, 4]`` for n >= 3.
* 32x32x3 (CIFAR-10): ``min(n, 3)`` poolings (32->16->8->4); the head sees ``[F, 16, 16]``,
  ``[F, 8, 8]``, then ``[F, 4, 4]``.

Convolutions use ``padding="same"`` (stride 1) by default, so only poolings change the spatial
size. With ``channel_growth`` g, the blocks after the p-th pooling have ``round(F * g**p)``
channels (g = 1, the journal's constant width, by default; g = 2 doubles per pooling as in VGG).

The ANN course's MNIST CNNs (``../shared/specs/ann_course.md`` §5) need more freedom, all off by
default: per-block ``kernel_sizes`` and ``block_filters``, an ``activation`` other than ReLU,
``padding="valid"`` (each convolution shrinks the map by ``k - 1``), floor rounding of the
poolings (``pool_ceil=False``, Keras' ``MaxPooling2D``) and dropout before the head's linear layer
(``head_dropout``). Keras' "simple MNIST convnet" (34,826 parameters) is then
``ConvNet((1, 28, 28), 10, n_blocks=2, block_filters=[32, 64], kernel_size=3, padding="valid",
pool_ceil=False, norm="none", head_dropout=0.5)``: Conv 32 3x3 -> ReLU -> MaxPool ->
Conv 64 3x3 -> ReLU -> MaxPool -> Flatten (1,600) -> Dropout -> Dense 10 (:func:`keras_mnist_convnet`).
With valid padding the number of poolings is the largest that keeps every pooled side at 3 or
more and every convolution's output at 1 or more.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import nn

from sweeplab.models.mlp import make_activation

#: Normalisation layers a block can use (see :func:`make_norm`).
NormName = Literal["none", "batch", "layer", "group", "instance"]
NORMS: tuple[str, ...] = ("none", "batch", "layer", "group", "instance")
#: Where the poolings go (see the module docstring).
PoolingName = Literal["early", "even"]
POOLINGS: tuple[str, ...] = ("early", "even")
#: Smallest side length a pooling may produce.
MIN_POOLED_SIZE = 3


def group_count(channels: int) -> int:
    """Number of groups GroupNorm uses for ``norm="group"``.

    The largest divisor of ``channels`` that is at most ``min(32, channels // 4)`` (so every
    group holds at least 4 channels, and at most the 32 groups of Wu & He, "Group
    Normalization", ECCV 2018); 1 when ``channels < 8``. E.g. 64 -> 16 groups, 32 -> 8,
    16 -> 4, 24 -> 6, 7 -> 1.

    Raises:
        ValueError: if ``channels < 1``.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    limit = max(1, min(32, channels // 4))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


class InstanceNorm(nn.GroupNorm):
    """Instance normalisation with a per-channel affine map (Ulyanov et al., 2016), computed as
    ``GroupNorm(C, C)``.

    Normalises every sample and channel of ``[B, C, H, W]`` over its ``H x W`` positions, then
    scales and shifts per channel: exactly ``nn.InstanceNorm2d(C, affine=True)`` in training and
    eval mode (no running statistics; the tests check equality of outputs and gradients). PyTorch's
    CPU GroupNorm kernel is faster than its InstanceNorm2d (measured 25% less time per training
    step of a 6-block, 64-filter net on Fashion-MNIST at one thread), hence this form.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, channels, eps=eps, affine=True)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine=True (as GroupNorm(C, C))"


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation layer of a block, for a feature map ``[B, channels, H, W]``.

    Args:
        norm: ``"none"`` (identity), ``"batch"`` (``BatchNorm2d``), ``"layer"``
            (``GroupNorm(1, C)``: per sample over channels and space, the CNN form of layer
            norm), ``"group"`` (``GroupNorm(group_count(C), C)``) or ``"instance"``
            (:class:`InstanceNorm`, i.e. ``InstanceNorm2d(C, affine=True)``: per sample and
            channel over space).
        channels: number of channels ``C``.

    Raises:
        ValueError: for an unknown ``norm``.
    """
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if norm == "instance":
        return InstanceNorm(channels)
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def max_pools(height: int, width: int) -> int:
    """How many 2x2 ``ceil_mode`` max-poolings keep both sides at least ``MIN_POOLED_SIZE``.

    E.g. 8x8 -> 1 (8->4), 28x28 -> 3 (28->14->7->4), 32x32 -> 3 (32->16->8->4), 3x3 -> 0.
    """
    n, side = 0, min(height, width)
    while math.ceil(side / 2) >= MIN_POOLED_SIZE:
        side = math.ceil(side / 2)
        n += 1
    return n


def pool_positions(n_blocks: int, n_pools: int, pooling: str = "early") -> list[int]:
    """0-based indices of the blocks followed by a pooling.

    Args:
        n_blocks: number of blocks (>= 1).
        n_pools: number of poolings, ``0 <= n_pools <= n_blocks``.
        pooling: ``"early"`` (after blocks ``0 .. n_pools-1``) or ``"even"`` (evenly spread,
            the last after the last block: for 6 blocks and 3 pools, after blocks 1, 3, 5).

    Raises:
        ValueError: for an unknown ``pooling`` or ``n_pools`` outside ``[0, n_blocks]``.
    """
    if not 0 <= n_pools <= n_blocks:
        raise ValueError(f"n_pools={n_pools} must lie in [0, n_blocks={n_blocks}]")
    if pooling == "early":
        return list(range(n_pools))
    if pooling == "even":
        return [math.ceil((p + 1) * n_blocks / n_pools) - 1 for p in range(n_pools)]
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


class ConvBlock(nn.Sequential):
    """``Conv2d -> Norm -> activation -> Dropout2d -> [MaxPool2d(2)]``.

    Maps ``[B, in_channels, H, W]`` to ``[B, out_channels, H', W']``: the convolution keeps
    ``H`` (``padding="same"``) or gives ``H - k + 1`` (``"valid"``); a pooling then halves it,
    rounding up (``pool_ceil``, default) or down (Keras). The convolution has a bias only with
    ``norm="none"`` (every other norm has its own shift, which makes a conv bias redundant).
    Dropout2d zeroes whole channels with probability ``dropout`` in training mode (Tompson et
    al., CVPR 2015); it is left out when ``dropout == 0``. ``activation`` is a name of
    :data:`sweeplab.models.mlp.ACTIVATIONS` (``relu``, the default, in place).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str,
                 dropout: float, pool: bool, activation: str = "relu", padding: str = "same",
                 pool_ceil: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=norm == "none"),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True) if activation == "relu" else make_activation(activation),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        if pool:
            layers.append(nn.MaxPool2d(2, ceil_mode=pool_ceil))
        super().__init__(*layers)


def plan_pools(height: int, width: int, kernel_sizes: Sequence[int], pooling: str = "early",
               padding: str = "same", pool_ceil: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    """Where the poolings go and the map size after every block.

    Starts from ``min(n_blocks, max_pools(H, W))`` poolings placed by :func:`pool_positions` and
    drops one at a time until every convolution's output is at least 1x1 and every pooled map
    at least ``MIN_POOLED_SIZE`` on its smaller side (with ``padding="same"`` and ceil rounding
    the first try always fits).

    Returns:
        ``(pool_after, sizes)``: indices of the blocks followed by a pooling, ``(H, W)`` after
        each block.

    Raises:
        ValueError: a kernel larger than the map it convolves even without any pooling.
    """
    n_blocks = len(kernel_sizes)
    halve = (lambda s: math.ceil(s / 2)) if pool_ceil else (lambda s: s // 2)
    for n_pools in range(min(n_blocks, max_pools(height, width)), -1, -1):
        after = pool_positions(n_blocks, n_pools, pooling)
        h, w, sizes, ok = height, width, [], True
        for i, k in enumerate(kernel_sizes):
            if padding == "valid":
                h, w = h - k + 1, w - k + 1
            if i in after:
                h, w = halve(h), halve(w)
                ok = ok and min(h, w) >= MIN_POOLED_SIZE
            ok = ok and min(h, w) >= 1
            sizes.append((h, w))
        if ok:
            return after, sizes
    raise ValueError(f"kernel sizes {list(kernel_sizes)} with padding 'valid' shrink a {height}x{width} input "
                     "below 1x1; use smaller kernels, fewer blocks or padding 'same'")


class ConvNet(nn.Module):
    """Plain CNN classifier: ``n_blocks`` :class:`ConvBlock` s and a linear head.

    Input ``[B, C, H, W]`` float images (any scaling; the trainable standardises them), output
    ``[B, num_classes]`` logits. See the module docstring for where the poolings go and the
    resulting shapes. The head is ``Flatten -> [Dropout] -> Linear(C_f*H_f*W_f, num_classes)``, or
    with ``head_hidden > 0`` ``Flatten -> [Dropout] -> Linear(., head_hidden) -> ReLU ->
    Linear(., num_classes)``.

    Args:
        in_shape: ``(C, H, W)`` of one input image.
        num_classes: number of output logits (>= 1).
        n_blocks: convolutional blocks, 1..8 (larger works too; the extra blocks run on the
            smallest map).
        filters: channels of the first block (>= 1).
        kernel_size: square kernel side (>= 1; even sizes work with "same" padding).
        dropout: Dropout2d probability in ``[0, 1)`` in every block.
        norm: one of :data:`NORMS` (see :func:`make_norm`).
        channel_growth: channel multiplier per pooling (> 0; 1.0 = constant width).
        pooling: ``"early"`` or ``"even"`` (see :func:`pool_positions`).
        head_hidden: width of an optional hidden layer in the head (0 = none).
        kernel_sizes: one kernel side per block (overrides ``kernel_size``).
        block_filters: output channels per block (overrides ``filters`` and ``channel_growth``).
        activation: a name of :data:`sweeplab.models.mlp.ACTIVATIONS` after every norm.
        padding: ``"same"`` or ``"valid"`` (no padding).
        pool_ceil: round pooled sizes up (True) or down (False, as Keras).
        head_dropout: dropout probability in ``[0, 1)`` before the head's first linear layer.

    Attributes:
        feature_shape: ``(C_f, H_f, W_f)`` of the map entering the head.
        pool_after: indices of the blocks followed by a pooling.
        block_channels: output channels of every block.

    Raises:
        ValueError: for an invalid argument (message names it).
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, *, n_blocks: int = 4,
                 filters: int = 32, kernel_size: int = 3, dropout: float = 0.0,
                 norm: str = "batch", channel_growth: float = 1.0, pooling: str = "early",
                 head_hidden: int = 0, kernel_sizes: Sequence[int] | None = None,
                 block_filters: Sequence[int] | None = None, activation: str = "relu",
                 padding: str = "same", pool_ceil: bool = True, head_dropout: float = 0.0) -> None:
        super().__init__()
        kernels = list(kernel_sizes) if kernel_sizes is not None else [kernel_size] * n_blocks
        _check_args(in_shape, num_classes, n_blocks, filters, kernels, block_filters, dropout, head_dropout,
                    channel_growth, norm, head_hidden, padding)
        channels, height, width = in_shape
        self.pool_after, sizes = plan_pools(height, width, kernels, pooling, padding, pool_ceil)
        blocks, self.block_channels = [], []
        in_ch, done = channels, 0
        for i in range(n_blocks):
            out_ch = block_filters[i] if block_filters is not None else max(1, round(filters * channel_growth ** done))
            pool = i in self.pool_after
            blocks.append(ConvBlock(in_ch, out_ch, kernels[i], norm, dropout, pool, activation, padding, pool_ceil))
            self.block_channels.append(out_ch)
            done += int(pool)
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.feature_shape = (in_ch, *sizes[-1])
        flat = in_ch * sizes[-1][0] * sizes[-1][1]
        first: list[nn.Module] = [nn.Flatten()] + ([nn.Dropout(head_dropout)] if head_dropout > 0 else [])
        if head_hidden:
            self.head = nn.Sequential(*first, nn.Linear(flat, head_hidden), nn.ReLU(inplace=True),
                                      nn.Linear(head_hidden, num_classes))
        else:
            self.head = nn.Sequential(*first, nn.Linear(flat, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` images -> ``[B, num_classes]`` logits."""
        return self.head(self.features(x))


def _check_args(in_shape, num_classes, n_blocks, filters, kernels, block_filters, dropout, head_dropout,
                channel_growth, norm, head_hidden, padding) -> None:
    """Raise ``ValueError`` naming the first invalid :class:`ConvNet` argument."""
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise ValueError(f"in_shape must be (C, H, W) with positive sides, got {in_shape}")
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    if filters < 1 or min(kernels) < 1 or num_classes < 1 or head_hidden < 0:
        raise ValueError("filters, kernel sizes and num_classes must be >= 1, head_hidden >= 0")
    if len(kernels) != n_blocks or (block_filters is not None and len(block_filters) != n_blocks):
        raise ValueError(f"kernel_sizes and block_filters need one value per block (n_blocks={n_blocks}); got "
                         f"{list(kernels)} and {None if block_filters is None else list(block_filters)}")
    if block_filters is not None and min(block_filters) < 1:
        raise ValueError(f"block_filters must be >= 1, got {list(block_filters)}")
    if not (0.0 <= dropout < 1.0 and 0.0 <= head_dropout < 1.0):
        raise ValueError(f"dropout and head_dropout must lie in [0, 1), got {dropout}, {head_dropout}")
    if channel_growth <= 0:
        raise ValueError(f"channel_growth must be > 0, got {channel_growth}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")


def keras_mnist_convnet(dropout: float = 0.5) -> ConvNet:
    """Keras' "Simple MNIST convnet" (keras.io/examples/vision/mnist_convnet; the ANN course's
    §1.3 Q5 "bigger model", ``../shared/specs/ann_course.md`` §5): 34,826 parameters, output
    logits (the softmax is in the loss)."""
    return ConvNet((1, 28, 28), 10, n_blocks=2, block_filters=[32, 64], kernel_size=3, padding="valid",
                   pool_ceil=False, norm="none", head_dropout=dropout)


def num_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (buffers such as BatchNorm's running
    statistics are not parameters and are not counted).

    Args:
        model: any ``nn.Module``.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
