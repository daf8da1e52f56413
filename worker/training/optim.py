"""Optimizer and learning-rate schedule (after nanoGPT's configure_optimizers and get_lr).

Groups come only from parameters that train; matrices (and embeddings) get weight decay, 1-D tensors
(biases, norm weights) never do. The schedule is a pure function of the step, set on the groups before
every step, so resuming needs no scheduler state beyond the step number.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable

import torch
from torch import nn

from .reporting import ConfigError
from .spec import Hyperparameters, RegularizationSpec

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def decayed_parameters(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """Parameters the L1/L2 penalties apply to: the same ones weight decay would (matrices)."""
    return [p for g in optimizer.param_groups for p in g["params"] if p.dim() >= 2]


def _fast_kernel_args(cls: type[torch.optim.Optimizer], device: torch.device) -> dict:
    """Fused kernels where this torch has them for the device (Adam, AdamW, SGD), else foreach."""
    accepted = inspect.signature(cls.__init__).parameters
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        fused_ok = device.type in _get_fused_kernels_supported_devices()
    except ImportError:  # pragma: no cover - older torch
        fused_ok = device.type == "cuda"
    if "fused" in accepted and fused_ok:
        return {"fused": True}
    return {"foreach": True} if "foreach" in accepted else {}


def build_optimizer(
    model: nn.Module, hp: Hyperparameters, reg: RegularizationSpec, device: torch.device
) -> torch.optim.Optimizer:
    cls = OPTIMIZERS[hp.optimizer]
    groups = param_groups(model.parameters(), reg.weight_decay)
    args = dict(hp.optimizer_args)
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    try:
        return cls(groups, lr=hp.learning_rate, **args, **_fast_kernel_args(cls, device))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"hyperparameters.optimizer_args: {hp.optimizer} rejected {args}: {e}",
                          field="hyperparameters.optimizer_args") from e


def add_parameters(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], weight_decay: float) -> None:
    """Gradual unfreezing: newly trainable parameters join as new groups (with the same defaults)."""
    for group in param_groups(params, weight_decay):
        optimizer.add_param_group(group)


class LrSchedule:
    """Linear warmup from 0 to the peak over `warmup_steps`, then constant, linear to 0, or cosine to 0."""

    def __init__(self, name: str, peak: float, warmup_steps: int, total_steps: int) -> None:
        self.name, self.peak, self.warmup, self.total = name, peak, warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        """The LR used for optimizer step `step` (0-based)."""
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        if self.name == "constant":
            return self.peak
        decay_steps = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / decay_steps)
        if self.name == "linear":
            return self.peak * (1.0 - progress)
        return self.peak * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
