"""Fixtures for the training-core tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from training_helpers import RecordingReporter

from worker.training.config import RunConfig
from worker.training.spec import JobSpec


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
def run(tmp_path: Path):
    """run(spec, reporter=None, output=None, **runconfig) -> (result, reporter)."""
    from worker.training import run_training

    def _run(spec: JobSpec, reporter: RecordingReporter | None = None, output: Path | None = None, **kw: Any):
        reporter = reporter or RecordingReporter()
        config = RunConfig(spec=spec, output_dir=output or tmp_path / "out", **kw)
        return run_training(config, reporter), reporter

    return _run


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Inductor cache for the session's compile tests, so each shape compiles once."""
    return tmp_path_factory.mktemp("compile-cache")
