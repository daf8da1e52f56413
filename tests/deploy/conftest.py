"""Fixtures for the compose-stack tests: a fresh database owned by the compose user, a moto S3 server."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from compose import ROOT, read_env_file
from stack import ComposeStack, ensure_postgres_role, new_redis_db

sys.path.insert(0, str(ROOT / "tests" / "storage"))
from motoserver import CREDENTIALS, moto_server  # noqa: E402

SECRETS = {"POSTGRES_PASSWORD": "stack-pg-secret", "REDIS_PASSWORD": "stack-redis-secret"}


def _create_database(admin_url: str, owner: str) -> str:
    from sqlalchemy import create_engine, text

    name = f"finetune_stack_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{owner}"'))
    engine.dispose()
    return name


def _drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@contextmanager
def running_stack(tmp_path: Path, postgres_admin_url: str, mode: str = "volume", *,
                  start_worker: bool = True) -> Iterator[ComposeStack]:
    """A migrated stack with the API (and one worker) up; mode "s3" keeps the artifacts in S3 (moto)."""
    dotenv = {**read_env_file(ROOT / ".env.example"), **SECRETS, "FINETUNE_METRICS_FLUSH_SECONDS": "0.2"}
    user = dotenv.get("POSTGRES_USER", "finetune")
    ensure_postgres_role(postgres_admin_url, user, SECRETS["POSTGRES_PASSWORD"])
    database = _create_database(postgres_admin_url, user)
    with ExitStack() as exits:
        s3 = exits.enter_context(moto_server()) if mode == "s3" else None
        if s3 is not None:
            bucket = s3.create_bucket(f"finetune-{uuid.uuid4().hex[:8]}")
            dotenv.update(CREDENTIALS, FINETUNE_ARTIFACTS=f"s3://{bucket}/artifacts",
                          FINETUNE_S3_ENDPOINT_URL="http://minio:9000")
        stack = ComposeStack(tmp_path, dotenv, database=database, redis_db=new_redis_db(),
                             s3_endpoint=s3.endpoint_url if s3 else None)
        stack.s3 = s3  # type: ignore[attr-defined]
        try:
            migrated = stack.run_once("migrate")  # depends_on: postgres healthy
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
            api = stack.start("api")  # depends_on: migrate completed successfully, redis healthy
            stack.wait_healthy("api", api)
            if start_worker:
                worker = stack.start("worker")
                stack.wait_healthy("worker", worker)
            yield stack
        finally:
            stack.close()
            _drop_database(postgres_admin_url, database)


@pytest.fixture
def compose_stack(request: pytest.FixtureRequest, tmp_path: Path, postgres_admin_url: str,
                  redis_url: str) -> Iterator[ComposeStack]:
    with running_stack(tmp_path, postgres_admin_url, getattr(request, "param", "volume")) as stack:
        yield stack


@pytest.fixture
def bare_compose_stack(tmp_path: Path, postgres_admin_url: str, redis_url: str) -> Iterator[ComposeStack]:
    """The API without workers: the test starts its own."""
    with running_stack(tmp_path, postgres_admin_url, start_worker=False) as stack:
        yield stack
