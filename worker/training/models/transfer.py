"""Transfer learning from an earlier job's checkpoint (model.from_job) for builtin models.

The new model is built with the base's architecture and tokenizer; tensors whose name and shape match
are copied, the rest (a head sized for a different label set) keep their fresh initialization.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..reporting import ConfigError


def read_base_config(path: Path) -> dict[str, Any]:
    config_file = Path(path) / "config.json"
    if not config_file.is_file() or not (Path(path) / "model.safetensors").is_file():
        raise ConfigError(f"model.from_job: {path} is not a checkpoint (model.safetensors + config.json)",
                          field="model.from_job")
    return json.loads(config_file.read_text())


def load_matching(model: nn.Module, path: Path) -> dict[str, Any]:
    """Copy base tensors that fit; returns {loaded, reinitialized, unused} parameter names."""
    return copy_matching(model, load_file(str(Path(path) / "model.safetensors")))


def copy_matching(model: nn.Module, source: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Copy the tensors of `source` whose name and shape match the model's; the rest keep their init."""
    loaded, reinitialized = [], []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            src = source.get(name)
            if src is not None and src.shape == tensor.shape:
                tensor.copy_(src)
                loaded.append(name)
            else:
                reinitialized.append(name)
    if not loaded:
        raise ConfigError("model.from_job: no tensor of the base checkpoint fits this model", field="model.from_job")
    return {"loaded": len(loaded), "reinitialized": reinitialized, "unused": sorted(set(source) - set(loaded))}
