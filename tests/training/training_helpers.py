"""Helpers for the training-core tests: an in-memory reporter and tiny job configs.

(A uniquely named module rather than conftest imports: the test tree has no packages.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.training.reporting import CheckpointInfo
from worker.training.spec import JobSpec


@dataclass
class RecordingReporter:
    stop_at_step: int | None = None  # should_stop() turns True once progress reached this step
    metric_log: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    events: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    saved: list[CheckpointInfo] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    last_step: int = 0
    progress_calls: int = 0

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metric_log.append((step, dict(values)))

    def event(self, level: str, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((level, type, message, data or {}))

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        self.last_step = step
        self.progress_calls += 1

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        self.saved.append(info)

    def checkpoint_removed(self, name: str) -> None:
        self.removed.append(name)

    def should_stop(self) -> bool:
        return self.stop_at_step is not None and self.last_step >= self.stop_at_step

    # queries
    def series(self, name: str) -> list[tuple[int, float]]:
        return [(s, v[name]) for s, v in self.metric_log if name in v]

    def values(self, name: str) -> list[float]:
        return [v for _, v in self.series(name)]

    def of_type(self, type: str) -> list[tuple[str, str, str, dict[str, Any]]]:
        return [e for e in self.events if e[1] == type]


TINY_MLP = {"builtin": "mlp", "config": {"hidden_sizes": [16], "dropout": 0.0}}
TINY_TRANSFORMER = {"builtin": "transformer",
                    "config": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "dropout": 0.0}}


def make_spec(**overrides: Any) -> JobSpec:
    """A small digits-MLP job with compile off; nested dicts in `overrides` are merged."""
    spec: dict[str, Any] = {
        "task": "classification",
        "model": copy.deepcopy(TINY_MLP),
        "data": {"train": "builtin:digits", "validation_split": 0.2},
        "hyperparameters": {"epochs": 1, "batch_size": 32, "compile": False, "learning_rate": 0.01,
                            "scheduler": "constant", "log_every_steps": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict) and key != "model":
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return JobSpec(**spec)


