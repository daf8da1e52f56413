"""Shared fixtures: real PostgreSQL and Redis on 127.0.0.1, migrated databases, isolated settings.

Service-backed tests never skip silently in CI: with CI=true a missing service is an error.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: service-backed tests must not skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def create_postgres_database(admin_url: str) -> str:
    """A fresh, empty database; returns its URL."""
    from sqlalchemy import create_engine, text

    name = f"finetune_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each backend."""
    from app.migrate import upgrade_database

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'finetune.db'}"
        upgrade_database(url)
        yield url
        return
    admin = request.getfixturevalue("postgres_admin_url")
    url = create_postgres_database(admin)
    try:
        upgrade_database(url)
        yield url
    finally:
        from app.db import reset_engines

        reset_engines()
        drop_postgres_database(admin, url)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    """FINETUNE_* environment for one test: its own home, database and artifact folder.

    The broker defaults to the embedded filesystem broker under the test's home.
    """
    from app.db import reset_engines
    from app.settings import get_settings

    env = {
        "FINETUNE_HOME": str(tmp_path / "home"),
        "FINETUNE_DATABASE_URL": database_url,
        "FINETUNE_ARTIFACTS": str(tmp_path / "artifacts"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    reset_engines()
    yield env
    get_settings.cache_clear()
    reset_engines()
