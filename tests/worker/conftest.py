"""Helpers for worker tests: job rows in a migrated database (both backends, via settings_env)."""

from __future__ import annotations

from typing import Any

import pytest

TINY_SPEC: dict[str, Any] = {
    "task": "classification",
    "model": {"builtin": "mlp", "config": {"hidden_sizes": [16]}},
    "data": {"train": "builtin:digits"},
    "hyperparameters": {"epochs": 1, "max_steps": 3, "batch_size": 32, "compile": False},
}


@pytest.fixture
def make_job(settings_env):  # noqa: ANN001
    """Insert a job row; returns its id."""
    from app.db import session_scope
    from app.jobs.models import Job

    def make(spec: dict[str, Any] | None = None, **fields: Any) -> str:
        with session_scope() as session:
            job = Job(spec=spec or TINY_SPEC, **fields)
            session.add(job)
            session.flush()
            return job.id

    return make
