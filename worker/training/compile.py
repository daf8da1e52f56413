"""torch.compile with a persistent cache and a safe fall-back to eager.

Compilation errors surface lazily, at the first forward or backward (no C++ compiler, an unsupported op),
so the trainer runs each step through `CompiledModel.model` and, when that raises while compiled, calls
`fall_back` and re-runs the step eagerly. A job never fails because compilation failed.

Shapes stay static (drop_last for training, padded evaluation batches), so the model compiles once for
training and once for evaluation (train/eval mode is a guard), and `dynamic=False` keeps kernels specialized.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn


def backend() -> str | Callable[..., Any]:
    """The torch.compile backend (a function so tests can swap in one that fails)."""
    return "inductor"


# Inductor settings for the duration of a job (restored afterwards):
# - fallback_random: dropout draws its masks with torch's own RNG kernels instead of Inductor's generated
#   Philox code. On the CPU that code is slower than the eager kernels (it made a compiled transformer with
#   dropout slower than eager), and torch's generator keeps compiled and eager runs (and resumes) on the
#   same random stream.
# - the FX graph and autograd caches, on disk, so a second job of the same shapes starts fast.
INDUCTOR_FLAGS = [
    ("torch._inductor.config", "fallback_random", True),
    ("torch._inductor.config", "fx_graph_cache", True),
    ("torch._functorch.config", "enable_autograd_cache", True),
]


@contextlib.contextmanager
def compile_settings(cache_dir: Path | None) -> Iterator[None]:
    """Apply INDUCTOR_FLAGS and point Inductor's (and Triton's) on-disk caches at `cache_dir` for a job."""
    saved: dict[str, str | None] = {}
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        env = {"TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"), "TRITON_CACHE_DIR": str(cache_dir / "triton")}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
    saved_flags = []
    for module_name, flag, value in INDUCTOR_FLAGS:
        module = _import(module_name)
        if module is not None and hasattr(module, flag):
            saved_flags.append((module, flag, getattr(module, flag)))
            setattr(module, flag, value)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for module, flag, value in saved_flags:
            setattr(module, flag, value)


def _import(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - depends on the torch build
        return None


class CompiledModel:
    """The model as the loop calls it: compiled when asked and working, the eager module otherwise."""

    def __init__(self, model: nn.Module, enabled: bool, mode: str | None = None) -> None:
        self.eager = model
        self.mode = mode
        self.compiled: nn.Module | None = None
        self.error: str | None = None
        self.first_call_seconds: float | None = None
        self._timing = False
        if enabled:
            chosen = backend()
            try:
                kwargs: dict[str, Any] = {"backend": chosen, "dynamic": False}
                if chosen == "inductor" and mode and mode != "default":
                    kwargs["mode"] = mode
                self.compiled = torch.compile(model, **kwargs)
            except Exception as e:  # e.g. a Python version torch.compile does not support
                self.error = _describe(e)

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    @property
    def model(self) -> nn.Module:
        return self.compiled if self.compiled is not None else self.eager

    def fall_back(self, error: BaseException) -> str:
        """Give up on compilation for the rest of the job; returns the reason, for a warning event."""
        self.compiled = None
        self.error = _describe(error)
        torch._dynamo.reset()  # drop half-built graphs and their guards
        return self.error

    @contextlib.contextmanager
    def timing_first_call(self) -> Iterator[None]:
        """Time the first compiled step (tracing + compiling forward and backward + running it)."""
        start = time.perf_counter()
        yield
        if self.compiled is not None and self.first_call_seconds is None:
            self.first_call_seconds = time.perf_counter() - start


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 2000 else text[:2000] + " ..."
