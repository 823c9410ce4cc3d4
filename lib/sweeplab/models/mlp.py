"""A plain multilayer perceptron (fully connected feed-forward net) and activations by name.

Source: the course's regression and time-series MLPs (``../shared/specs/ann_course.md`` §1, §2):
``layers`` hidden layers of ``hidden`` units, each ``Linear -> activation [-> Dropout]``, then a
linear output layer. PyTorch's default initialisation (Kaiming-uniform weights, uniform biases).
"""
from __future__ import annotations

from torch import nn

#: Activations by name (``identity`` makes the net linear: an AR model for a forecaster).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU, "gelu": nn.GELU, "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (``leaky_relu`` with PyTorch's slope 0.01).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """``[B, in_features]`` -> ``[B, out_features]``: ``layers`` hidden layers, linear output.

    Args:
        in_features: inputs per sample (>= 1).
        out_features: outputs per sample (>= 1).
        hidden: units of every hidden layer (>= 1).
        layers: hidden layers (>= 0; 0 = one linear map).
        activation: a name of :data:`ACTIVATIONS`.
        dropout: dropout probability after every hidden activation, in ``[0, 1)`` (0 = none).

    Raises:
        ValueError: an invalid argument.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 10, layers: int = 1,
                 activation: str = "relu", dropout: float = 0.0) -> None:
        if min(in_features, out_features, hidden) < 1 or layers < 0:
            raise ValueError(f"MLP needs in_features, out_features, hidden >= 1 and layers >= 0; got "
                             f"{in_features}, {out_features}, {hidden}, {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        modules: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            modules += [nn.Linear(width, hidden), make_activation(activation)]
            if dropout > 0:
                modules.append(nn.Dropout(dropout))
            width = hidden
        modules.append(nn.Linear(width, out_features))
        super().__init__(*modules)
