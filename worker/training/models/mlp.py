"""A multilayer perceptron for vector (tabular) inputs: batch key `inputs` of shape (B, F)."""

from __future__ import annotations

import torch
from torch import nn

from ..spec import MlpConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MlpBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.linear(x)))


class Mlp(nn.Module):
    """Hidden blocks `layers.{i}` then a linear `head`; returns (B, out) logits, or (B,) when out == 1."""

    def __init__(self, config: MlpConfig, in_features: int, out_features: int) -> None:
        super().__init__()
        self.config = config
        self.out_features = out_features
        sizes = [in_features, *config.hidden_sizes]
        self.layers = nn.ModuleList(
            MlpBlock(a, b, config.activation, config.dropout) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.head = nn.Linear(sizes[-1], out_features)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        for layer in self.layers:
            x = layer(x)
        out = self.head(x)
        return out.squeeze(-1) if self.out_features == 1 else out

    def layer_prefixes(self) -> list[str]:
        return [f"layers.{i}." for i in range(len(self.layers))]
