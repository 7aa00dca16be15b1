"""Models, built from plain constructor args (stored as JSON in the bundle, never pickled)."""
from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Tabular MLP over the packed feature vector: [Linear → activation → dropout] × hidden, then a head."""

    def __init__(self, input_dim: int, output_dim: int, hidden: list[int], dropout: float = 0.0,
                 activation: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def model_config(model_spec, input_dim: int, output_dim: int) -> dict:
    """Constructor args of the model a spec describes; what `build_model` and the bundle consume."""
    return {"kind": model_spec.kind, "input_dim": input_dim, "output_dim": output_dim,
            "hidden": list(model_spec.hidden), "dropout": model_spec.dropout, "activation": model_spec.activation}


def build_model(config: dict) -> nn.Module:
    kind = config.get("kind", "mlp")
    if kind == "mlp":
        return MLP(config["input_dim"], config["output_dim"], config["hidden"], config.get("dropout", 0.0),
                   config.get("activation", "relu"))
    raise ValueError(f"unknown model kind {kind!r}; this trainyard knows: mlp")
