"""Device and numeric precision: where the model runs and in which dtype its matmuls are done.

- auto: bf16 autocast on CUDA when the GPU supports it, else fp32 (CPU autocast rarely pays off);
- bf16: autocast to bfloat16 (CUDA or CPU);
- fp16: autocast to float16 with a gradient scaler, CUDA only (on CPU it falls back to fp32, with a warning);
- fp32: no autocast. Weights and optimizer state always stay fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class Precision:
    device: torch.device
    name: str  # what actually runs: "fp32" | "bf16" | "fp16"
    warning: str | None = None  # why it differs from what was asked

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def resolve_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(requested: str, device: torch.device) -> Precision:
    cuda = device.type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return Precision(device, "bf16" if bf16_ok else "fp32")
    if requested == "bf16" and cuda and not bf16_ok:
        return Precision(device, "fp16", "this GPU has no bf16; using fp16 with a gradient scaler")
    if requested == "fp16" and not cuda:
        return Precision(device, "fp32", "fp16 needs a CUDA device; using fp32 on the CPU")
    return Precision(device, requested)
