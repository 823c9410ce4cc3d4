"""Fully connected autoencoders: a plain autoencoder and a stacked autoencoder with a softmax head.

Source: ``../shared/specs/ann_course.md`` §4 (the course report's §3.1). The report gives no
architecture; the spec's proposal for the plain autoencoder is ``Linear(784, enc) -> ReLU ->
Linear(enc, 784) -> Sigmoid`` trained on per-pixel MSE, which :class:`Autoencoder` is with
``hidden_dims=()``; deeper ones insert hidden layers on both sides (mirrored). The stacked
autoencoder follows Bengio et al. 2007 ("Greedy layer-wise training of deep networks"): each
encoder layer is pretrained as a one-hidden-layer autoencoder on the codes of the layers below
it, a softmax layer is then trained on the frozen encoder, and the whole network is fine-tuned
with cross-entropy.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: Activations by name.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
                                           "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    """A new activation module by name (:data:`ACTIVATIONS`).

    Raises:
        ValueError: an unknown name.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {name!r}")
    return ACTIVATIONS[name]()


def mlp(dims: Sequence[int], act: str, last: nn.Module | None) -> nn.Sequential:
    """``Linear`` layers through ``dims`` with ``act`` after every hidden layer and ``last`` (or
    ``act`` when ``None``) after the final one."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        layers.append(last if i == len(dims) - 2 and last is not None else activation(act))
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """``n_in -> hidden_dims -> encoding_dim -> reversed(hidden_dims) -> n_in``.

    Args:
        n_in: input features D (784 for MNIST). encoding_dim: the code's width.
        hidden_dims: widths between the input and the code (``()``: the spec's one-layer model).
        act: activation after every layer but the output, which is a sigmoid (inputs in [0, 1]).

    Shapes: ``forward`` ``[B, D] -> [B, D]``; ``encode`` ``[B, D] -> [B, encoding_dim]``.
    """

    def __init__(self, n_in: int, encoding_dim: int, hidden_dims: Sequence[int] = (), act: str = "relu") -> None:
        super().__init__()
        dims = [n_in, *hidden_dims, encoding_dim]
        self.encoder = mlp(dims, act, None)
        self.decoder = mlp(dims[::-1], act, nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of ``x``."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``x``, in (0, 1)."""
        return self.decoder(self.encoder(x))


class StackedAutoencoder(nn.Module):
    """An encoder ``n_in -> hidden_dims[0] -> ... -> hidden_dims[-1]``, one decoder per layer for
    greedy pretraining, and a softmax head ``hidden_dims[-1] -> n_classes``.

    Layer ``l``'s pretraining autoencoder is ``act(encoders[l](z)) -> decoders[l]`` reconstructing its
    input ``z`` (the pixels for ``l = 0``, with a sigmoid output; the codes of layer ``l - 1``
    otherwise, with a linear output).

    Args:
        n_in: input features D. hidden_dims: encoder widths (the spec proposes [512, 256]).
        n_classes: classes C. act: the encoder's activation.
    """

    def __init__(self, n_in: int, hidden_dims: Sequence[int], n_classes: int, act: str = "relu") -> None:
        super().__init__()
        if not hidden_dims:
            raise ValueError("a stacked autoencoder needs at least one hidden layer (hidden_dims)")
        dims = [n_in, *hidden_dims]
        self.encoders = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.decoders = nn.ModuleList(nn.Linear(b, a) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation(act)
        self.head = nn.Linear(dims[-1], n_classes)

    @property
    def depth(self) -> int:
        """Encoder layers."""
        return len(self.encoders)

    def encode(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """The codes after the first ``upto`` encoder layers (all by default): ``[B, D] -> [B, d]``."""
        for enc in self.encoders[: self.depth if upto is None else upto]:
            x = self.act(enc(x))
        return x

    def reconstruct_layer(self, z: torch.Tensor, layer: int) -> torch.Tensor:
        """Layer ``layer``'s pretraining autoencoder applied to its input ``z``."""
        out = self.decoders[layer](self.act(self.encoders[layer](z)))
        return torch.sigmoid(out) if layer == 0 else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, C]``."""
        return self.head(self.encode(x))

    def layer_parameters(self, layer: int) -> list[nn.Parameter]:
        """Parameters trained while pretraining ``layer``: its encoder and decoder."""
        return [*self.encoders[layer].parameters(), *self.decoders[layer].parameters()]

    def classifier_parameters(self, finetune: bool) -> list[nn.Parameter]:
        """The head's parameters (``finetune=False``), or the encoder's and the head's (``True``);
        the decoders are not part of the classifier."""
        return [*(self.encoders.parameters() if finetune else ()), *self.head.parameters()]
