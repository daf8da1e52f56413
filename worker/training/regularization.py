"""Regularization that is not the optimizer's: explicit L1/L2 penalties and the dropout override.

Weight decay lives in the optimizer (decoupled for AdamW); label smoothing in the loss; gradient
clipping in the loop.
"""

from __future__ import annotations

import torch
from torch import nn

from .spec import RegularizationSpec


def penalties(params: list[nn.Parameter], reg: RegularizationSpec) -> dict[str, torch.Tensor]:
    """{"l1_penalty": l1·Σ|w|, "l2_penalty": l2·Σw²} over the trainable weight matrices (no biases/norms)."""
    out: dict[str, torch.Tensor] = {}
    params = [p for p in params if p.requires_grad]
    if not params:
        return out
    if reg.l1:
        out["l1_penalty"] = reg.l1 * torch.stack([p.abs().sum() for p in params]).sum()
    if reg.l2:
        out["l2_penalty"] = reg.l2 * torch.stack([p.pow(2).sum() for p in params]).sum()
    return out


def override_dropout(model: nn.Module, p: float) -> int:
    """Set every dropout rate in the model to `p`: nn.Dropout modules and attention's `dropout_p`.

    Returns how many places changed; the model's config (when it has one) records the new rate so a
    checkpoint rebuilds the same architecture.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = p
            changed += 1
        elif isinstance(getattr(module, "dropout_p", None), float):
            module.dropout_p = p
            changed += 1
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "dropout"):
            setattr(config, "dropout", p)
    return changed
