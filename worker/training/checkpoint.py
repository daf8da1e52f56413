"""Checkpoints on disk: safetensors weights, a JSON config, and the training state for resume.

Layout: output_dir/checkpoints/step-XXXXXXXX/
    model.safetensors    the uncompiled model's state dict (no `_orig_mod.` keys); never pickle
    config.json          everything needed to rebuild the model and run inference without the dataset
    training_state.pt    optimizer, RNG, step, early-stopping state; plain tensors and numbers only,
                         read back with torch.load(weights_only=True)
A checkpoint is written under a hidden temporary name and renamed when complete, so a directory
named step-* is always whole; temporary leftovers of a crash are deleted, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "training_state.pt"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d{8,})$")


@dataclass(frozen=True)
class Written:
    name: str
    path: Path
    step: int
    size_bytes: int
    sha256: str


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoints_root(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def is_complete(path: Path) -> bool:
    return all((path / f).is_file() for f in (MODEL_FILE, CONFIG_FILE))


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_dir() and is_complete(entry):
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_resumable(output_dir: Path) -> Path | None:
    for _, path in reversed(list_checkpoints(output_dir)):
        if (path / STATE_FILE).is_file():
            return path
    return None


def remove_partial(output_dir: Path) -> list[str]:
    """Delete temporary directories a crash left behind; returns their names."""
    root = checkpoints_root(output_dir)
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(".tmp-"):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # the eager module's own state dict: a compiled wrapper would prefix every key with `_orig_mod.`
    model = getattr(model, "_orig_mod", model)
    state, seen = {}, set()
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu").contiguous()
        # tied weights (GPT-2's lm_head and wte) share memory, which safetensors refuses: store a copy
        key = v.untyped_storage().data_ptr()
        state[k] = v.clone() if key in seen and v.numel() else v
        seen.add(key)
    return state


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(
    output_dir: Path, step: int, model: nn.Module, config: dict[str, Any], state: dict[str, Any] | None,
    extra: Callable[[Path], None] | None = None,
) -> Written:
    """`extra(folder)` writes more files into the checkpoint before it is complete (models.checkpoint_exporter)."""
    root = checkpoints_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(model_state(model), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        _fsync(tmp / MODEL_FILE)
        _write_json(tmp / CONFIG_FILE, {"format_version": FORMAT_VERSION, **config})
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
            _fsync(tmp / STATE_FILE)
        if extra is not None:
            extra(tmp)
        final = root / name
        if final.exists():  # a stale checkpoint of the same step (a restarted run): replace it whole
            stale = root / f".tmp-stale-{name}-{uuid.uuid4().hex[:8]}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    digest = hashlib.sha256((final / MODEL_FILE).read_bytes()).hexdigest()
    size = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    return Written(name, final, step, size, digest)


def remove_checkpoint(output_dir: Path, name: str) -> None:
    path = checkpoints_root(output_dir) / name
    if _NAME.match(name) and path.is_dir():
        # rename first so a crash mid-delete leaves a temporary name, never a half checkpoint
        doomed = path.with_name(f".tmp-removed-{name}-{uuid.uuid4().hex[:8]}")
        path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def to_prune(output_dir: Path, keep_last: int, protected: set[str]) -> list[str]:
    """Names of checkpoints beyond the newest `keep_last`, sparing the protected ones (the best)."""
    names = [p.name for _, p in list_checkpoints(output_dir)]
    recent = set(names[-keep_last:])
    return [n for n in names if n not in recent and n not in protected]


def read_config(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))


def load_weights(model: nn.Module, path: Path) -> None:
    model.load_state_dict(load_file(str(Path(path) / MODEL_FILE)), strict=True)


def load_training_state(path: Path) -> dict[str, Any]:
    # weights_only: only tensors and plain containers are rebuilt, never arbitrary objects
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
