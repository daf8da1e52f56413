"""RunConfig: the job spec plus what the worker resolved for it (files, folders, device)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .spec import JobSpec


@dataclass
class RunConfig:
    spec: JobSpec
    output_dir: Path  # checkpoints/ lives here; an existing checkpoint there is resumed from
    # uploaded dataset id -> (local file path, format "jsonl" | "csv"); builtins need no entry
    datasets: dict[str, tuple[Path, str]] = field(default_factory=dict)
    # for model.from_job: the local directory of the base checkpoint (model.safetensors + config.json)
    base_checkpoint: Path | None = None
    resume: bool = True
    compile_cache_dir: Path | None = None
    device: str | None = None  # None: cuda when available, else cpu
    allow_hub_downloads: bool = False  # Hugging Face hub ids only load when the deployment allows it
