from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from motoserver import CREDENTIALS, MotoServer, moto_server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """boto3's standard credentials in the environment, as a deployment sets them."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return dict(CREDENTIALS)


@pytest.fixture
def bucket(s3_server: MotoServer, s3_env: dict[str, str]) -> str:
    return s3_server.create_bucket(f"artifacts-{uuid.uuid4().hex[:12]}")
