"""A Vision Transformer (ViT) image classifier in plain PyTorch.

Source: Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, in the small form of
the MNIST tutorial the ANN course's §3.3 uses (``../shared/specs/ann_course.md`` §6): the image
is cut into ``patch_size`` x ``patch_size`` patches, each linearly embedded to ``dim`` (a
``Conv2d`` with stride = kernel = patch, the same map as a ``Linear`` on the flattened patch), a
learned class token is prepended and learned position embeddings added (both initialised from
N(0, 1) as in the tutorial), then ``depth`` pre-norm encoder layers
(``torch.nn.TransformerEncoderLayer``: multi-head self-attention with ``heads`` heads of width
``dim / heads``, a GELU MLP of width ``mlp_dim``, dropout ``dropout``), a final LayerNorm and a
linear head on the class token. MNIST with patch 7: 16 patches + 1 class token.
"""
from __future__ import annotations

import torch
from torch import nn


class ViT(nn.Module):
    """``[B, C, H, W]`` images -> ``[B, num_classes]`` logits.

    Args:
        in_shape: ``(C, H, W)``; ``patch_size`` must divide ``H`` and ``W``.
        num_classes: output logits (>= 1).
        patch_size: side of the square patches.
        dim: token width; must be a multiple of ``heads``.
        depth: encoder layers (>= 1).
        heads: attention heads.
        mlp_dim: hidden width of each layer's MLP.
        dropout: dropout in attention, MLP and residual paths.
        emb_dropout: dropout on the embedded tokens.

    Attributes:
        num_patches: patches per image.

    Raises:
        ValueError: a patch size that does not divide the image, ``dim`` not a multiple of
            ``heads``, or a size below 1.
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, *, patch_size: int = 7,
                 dim: int = 64, depth: int = 6, heads: int = 8, mlp_dim: int = 128, dropout: float = 0.0,
                 emb_dropout: float = 0.0) -> None:
        super().__init__()
        channels, height, width = in_shape
        if min(num_classes, patch_size, dim, depth, heads, mlp_dim) < 1:
            raise ValueError("num_classes, patch_size, dim, depth, heads and mlp_dim must be >= 1")
        if height % patch_size or width % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide the image size {height}x{width}")
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads} (each head has width dim / heads)")
        self.num_patches = (height // patch_size) * (width // patch_size)
        self.embed = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, self.num_patches + 1, dim))
        self.emb_dropout = nn.Dropout(emb_dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, num_classes]`` logits."""
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # [B, num_patches, dim]
        cls = self.cls_token.expand(len(tokens), -1, -1)
        tokens = self.emb_dropout(torch.cat([cls, tokens], dim=1) + self.pos_embedding)
        return self.head(self.norm(self.encoder(tokens)[:, 0]))
