"""The training core: a library that fine-tunes a model from a RunConfig and reports through a Reporter.

It imports torch (and transformers/peft where a model needs them), never FastAPI, Celery or SQLAlchemy.
This package's __init__ stays light so the API can import `worker.training.spec` without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RunConfig
    from .reporting import Reporter, TrainingResult


def run_training(config: "RunConfig", reporter: "Reporter") -> "TrainingResult":
    """Train (or resume) the job described by `config`; see worker.training.trainer."""
    from .trainer import run_training as _run

    return _run(config, reporter)
