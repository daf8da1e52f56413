"""Security test fixtures: an app per test on each database backend, API keys for two owners, and an
owner's resources (a job with events, metrics and a checkpoint on disk, a dataset) to attack."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from security_support import DATASET, SPEC  # noqa: F401



@pytest.fixture
def settings(settings_env):  # noqa: ANN001
    from app.settings import get_settings

    return get_settings()


@pytest.fixture
def app(settings):  # noqa: ANN001
    from app.main import create_app

    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # noqa: ANN001
    with TestClient(app) as c:
        yield c


@pytest.fixture
def db(settings) -> Callable[[], AbstractContextManager[Session]]:  # noqa: ANN001
    from app.db import session_scope

    return lambda: session_scope(settings.database_url)


@pytest.fixture
def make_key(db) -> Callable[[str], dict[str, str]]:  # noqa: ANN001
    """Create an API key for an owner; returns its Authorization header."""
    from app.keys.service import create_key

    def make(owner: str) -> dict[str, str]:
        with db() as session:
            _, secret = create_key(session, f"{owner}-{uuid.uuid4().hex[:6]}", owner)
        return {"Authorization": f"Bearer {secret}"}

    return make


@dataclass
class Owned:
    """What one owner has: a finished job with events, metrics and a checkpoint, and a dataset."""

    headers: dict[str, str]
    job_id: str
    checkpoint_id: str
    checkpoint_dir: Path
    dataset_id: str


@pytest.fixture
def make_owned(client, db, settings, make_key) -> Callable[[str], Owned]:  # noqa: ANN001
    from app.db import utcnow
    from app.jobs.models import Checkpoint, Job, JobEvent, MetricPoint

    def make(owner: str) -> Owned:
        headers = make_key(owner)
        job_id = client.post("/jobs", json=SPEC, headers=headers).json()["id"]
        dataset = client.post("/datasets", files={"file": ("d.jsonl", DATASET)}, headers=headers)
        assert dataset.status_code == 201, dataset.text
        name = "step-00000003"
        folder = Path(settings.artifacts) / "jobs" / job_id / "checkpoints" / name
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights of " + owner.encode())
        (folder / "config.json").write_text("{}")
        with db() as session:
            job = session.get(Job, job_id)
            job.status, job.started_at, job.finished_at = "succeeded", utcnow(), utcnow()
            checkpoint = Checkpoint(job_id=job_id, name=name, step=3, epoch=1.0, metrics={"val_loss": 0.5},
                                    size_bytes=20, sha256="a" * 64, storage_key=f"jobs/{job_id}/checkpoints/{name}",
                                    is_best=True, is_final=True)
            session.add(checkpoint)
            session.add(JobEvent(job_id=job_id, type="succeeded", message="done", level="info"))
            session.add_all(MetricPoint(job_id=job_id, name="train_loss", step=s, value=1.0 / s) for s in (1, 2, 3))
            session.flush()
            checkpoint_id = checkpoint.id
        return Owned(headers, job_id, checkpoint_id, folder, dataset.json()["id"])

    return make
