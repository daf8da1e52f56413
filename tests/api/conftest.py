"""API test helpers: an app per test (against the migrated database of each backend), rows inserted
directly to stand in for what a worker records, and API keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api_support import SPEC, spec  # noqa: F401  (re-exported for tests)


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
    """A unit of work on the test database: `with db() as session: ...` commits on exit."""
    from app.db import session_scope

    return lambda: session_scope(settings.database_url)


@pytest.fixture
def make_key(db) -> Callable[..., dict[str, str]]:  # noqa: ANN001
    """Create an API key; returns the Authorization header for it."""
    from app.keys.service import create_key

    def make(owner: str) -> dict[str, str]:
        with db() as session:
            _, secret = create_key(session, f"{owner}-key-{uuid.uuid4().hex[:6]}", owner)
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
def finish_job(db) -> Callable[..., None]:  # noqa: ANN001
    """Mark a job as a worker would when it ends (status, timestamps, result)."""
    from app.db import utcnow
    from app.jobs.models import Job

    def finish(job_id: str, status: str = "succeeded", **fields: Any) -> None:
        with db() as session:
            job = session.get(Job, job_id)
            job.status = status
            job.started_at = job.started_at or utcnow()
            if status not in ("queued", "running"):
                job.finished_at = utcnow()
            for key, value in fields.items():
                setattr(job, key, value)

    return finish
