"""Which parameters train: glob patterns, train_only, first_n_layers, and gradual unfreezing.

Freezing sets requires_grad=False before the optimizer and the compiler see the model, so a frozen
parameter gets no gradient, no optimizer state and no weight decay, and comes out bitwise unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from .models import layer_prefixes
from .reporting import ConfigError
from .spec import FreezeSpec


@dataclass
class FreezePlan:
    frozen: list[str] = field(default_factory=list)  # parameter names frozen by the spec
    unfreeze_after_epochs: int | None = None

    def due(self, epoch: int) -> bool:
        """True at the start of the epoch where gradual unfreezing happens."""
        return bool(self.frozen) and self.unfreeze_after_epochs is not None and epoch >= self.unfreeze_after_epochs


def canonical_name(name: str) -> str:
    """A parameter's name as the unwrapped model has it: LoRA (peft) adds `base_model.model.` in front and
    moves a wrapped layer's weight to `.base_layer.`; patterns are written against the plain names."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def _matches(name: str, pattern: str) -> bool:
    # "encoder.layer.0" names a module: it matches everything under it as well as itself
    name = canonical_name(name)
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern.rstrip(".*") + ".*")


def _check_matches(names: list[str], patterns: list[str], where: str) -> None:
    for i, pattern in enumerate(patterns):
        if not any(_matches(n, pattern) for n in names):
            sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ConfigError(f"{where}[{i}]: pattern {pattern!r} matches no parameter; parameters are named "
                              f"like: {sample}", field=where)


def plan_freeze(model: nn.Module, spec: FreezeSpec) -> FreezePlan:
    """Decide (and validate) what to freeze without touching the model.

    Parameters that arrive frozen (LoRA's base weights) stay frozen and are not part of the plan (gradual
    unfreezing never unfreezes them)."""
    names = [n for n, _ in model.named_parameters()]
    prefrozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    _check_matches(names, spec.patterns, "freeze.patterns")
    frozen = {n for n in names if any(_matches(n, p) for p in spec.patterns)}
    if spec.train_only is not None:
        _check_matches(names, spec.train_only, "freeze.train_only")
        frozen |= {n for n in names if not any(_matches(n, p) for p in spec.train_only)}
    if spec.first_n_layers:
        layers = layer_prefixes(model)
        if layers is None:
            raise ConfigError("freeze.first_n_layers: this model has no layer list; use freeze.patterns",
                              field="freeze.first_n_layers")
        if spec.first_n_layers > len(layers):
            raise ConfigError(f"freeze.first_n_layers: {spec.first_n_layers} is more than the model's "
                              f"{len(layers)} layers", field="freeze.first_n_layers")
        extra = getattr(model, "frozen_with_first_layers", lambda: [])()
        prefixes = tuple(layers[: spec.first_n_layers]) + tuple(extra)
        frozen |= {n for n in names if canonical_name(n).startswith(prefixes)}
    if frozen and len(frozen | prefrozen) == len(names):
        raise ConfigError("freeze: every parameter would be frozen; nothing would train", field="freeze")
    return FreezePlan([n for n in names if n in frozen and n not in prefrozen], spec.unfreeze_after_epochs)


def apply_freeze(model: nn.Module, plan: FreezePlan) -> None:
    frozen = set(plan.frozen)
    for name, p in model.named_parameters():
        p.requires_grad_(p.requires_grad and name not in frozen)


def unfreeze(model: nn.Module, plan: FreezePlan) -> list[nn.Parameter]:
    """Make the plan's frozen parameters trainable; returns them (for a new optimizer param group)."""
    frozen = set(plan.frozen)
    params = [p for n, p in model.named_parameters() if n in frozen and not p.requires_grad]
    for p in params:
        p.requires_grad_(True)
    return params


def trainable_summary(model: nn.Module, limit: int = 50) -> dict[str, Any]:
    """The data of the `trainable_parameters` event."""
    named = list(model.named_parameters())
    train = [n for n, p in named if p.requires_grad]
    frozen = [n for n, p in named if not p.requires_grad]
    return {
        "trainable": sum(p.numel() for _, p in named if p.requires_grad),
        "total": sum(p.numel() for _, p in named),
        "trainable_tensors": len(train),
        "frozen_tensors": len(frozen),
        "trainable_names": train[:limit],
        "frozen_names": frozen[:limit],
        "truncated": len(train) > limit or len(frozen) > limit,
    }
