"""How the core tells the outside world what happens: the Reporter protocol and the records it passes.

The worker implements a Reporter that writes SQL rows; tests and benchmarks use in-memory ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Level = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint directory (written under a temporary name, then renamed)."""

    name: str  # directory name under RunConfig.output_dir / "checkpoints", e.g. "step-00000120"
    path: Path
    step: int
    epoch: float
    metrics: dict[str, float]
    size_bytes: int
    sha256: str  # of model.safetensors
    is_best: bool = False  # best validation loss so far
    is_final: bool = False  # written at the end of the run


@dataclass
class TrainingResult:
    status: Literal["succeeded", "cancelled", "early_stopped"]
    steps: int
    epochs: float
    metrics: dict[str, float] = field(default_factory=dict)  # final train/validation metrics
    best_checkpoint: str | None = None  # CheckpointInfo.name
    final_checkpoint: str | None = None


@runtime_checkable
class Reporter(Protocol):
    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Scalar metrics at a global step (train_loss, lr, val_loss, val_accuracy, ...)."""

    def event(self, level: Level, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        """A log event: started, device, compile, trainable_parameters, evaluation, early_stop, ..."""

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        """Where the run is; called every step, so keep it cheap."""

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        """A checkpoint directory is complete on disk."""

    def checkpoint_removed(self, name: str) -> None:
        """An older checkpoint was pruned (keep_checkpoints)."""

    def should_stop(self) -> bool:
        """Checked every step: True cancels the run promptly (a final checkpoint is not written)."""


class QuietReporter:
    """A Reporter that records nothing and never stops the run: a base for reporters that want one or two
    of the callbacks (benchmarks, scripts using the core as a library)."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def event(self, level: Level, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        pass

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        pass

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        pass

    def checkpoint_removed(self, name: str) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class TrainingError(Exception):
    """A failure the user can act on (bad config found late, NaN loss, ...); the message says what to do."""

    def __init__(self, message: str, *, field: str | None = None, type: str = "training_error") -> None:
        super().__init__(message)
        self.field = field
        self.type = type


class ConfigError(TrainingError):
    """The config is invalid; raised before any training work."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field, type="invalid_config")
