"""A small convolutional network for single-channel images: batch key `inputs` of shape (B, C, H, W)."""

from __future__ import annotations

import torch
from torch import nn

from ..spec import CnnConfig


class ConvBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, kernel_size: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, kernel_size, padding=kernel_size // 2)
        self.act = nn.ReLU()
        # pooling halves the image while it is still at least 2 pixels wide, so tiny images keep a pixel
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.conv(x)))


class Cnn(nn.Module):
    """Conv blocks `layers.{i}`, a hidden linear `fc`, then `head`; returns (B, out) or (B,) when out == 1."""

    def __init__(self, config: CnnConfig, image_shape: tuple[int, int, int], out_features: int) -> None:
        super().__init__()
        self.config = config
        self.out_features = out_features
        channels, height, width = image_shape
        blocks = []
        for n_out in config.channels:
            pool = min(height, width) >= 2
            blocks.append(ConvBlock(channels, n_out, config.kernel_size, pool))
            channels = n_out
            if pool:
                height, width = height // 2, width // 2
        self.layers = nn.ModuleList(blocks)
        self.fc = nn.Linear(channels * height * width, config.hidden_size)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, out_features)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        for layer in self.layers:
            x = layer(x)
        x = self.dropout(self.act(self.fc(x.flatten(1))))
        out = self.head(x)
        return out.squeeze(-1) if self.out_features == 1 else out

    def layer_prefixes(self) -> list[str]:
        return [f"layers.{i}." for i in range(len(self.layers))] + ["fc."]
