"""Shared data of the API tests (importable: tests/api is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import copy
from typing import Any

SPEC: dict[str, Any] = {
    "name": "digits-mlp",
    "task": "classification",
    "model": {"builtin": "mlp", "config": {"hidden_sizes": [16]}},
    "data": {"train": "builtin:digits"},
    "hyperparameters": {"epochs": 1, "max_steps": 3, "batch_size": 32, "compile": False},
}


def spec(**changes: Any) -> dict[str, Any]:
    """A copy of SPEC with top-level fields replaced."""
    return {**copy.deepcopy(SPEC), **changes}
