"""Request dependencies as Annotated aliases; endpoints take only these."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from .auth import resolve_owner
from .db import session_scope
from .settings import Settings
from .storage import ArtifactStore, get_store

# auto_error=False: a missing header is decided by resolve_owner (open mode), not refused here.
bearer = HTTPBearer(auto_error=False, description="an API key from `finetune keys create`")


# Dependencies that never block are `async def`: FastAPI runs a plain `def` dependency in its threadpool,
# and on a small machine each of those hops costs about as much CPU as a database query.


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    # One unit of work per request: commit when the endpoint returns, roll back when it raises.
    with session_scope(settings.database_url) as session:
        yield session


# scope="function": commit before the response is sent, so a client never sees a 201 for an uncommitted row.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_artifact_store(request: Request) -> ArtifactStore:  # sync: building an S3 client may block
    state = request.app.state
    if getattr(state, "store", None) is None:
        state.store = get_store(state.settings.artifacts)
    return state.store


StoreDep = Annotated[ArtifactStore, Depends(get_artifact_store)]


def get_owner(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str | None:
    return resolve_owner(session, credentials)


OwnerDep = Annotated[str | None, Depends(get_owner)]


def idempotency_key_header(what: str) -> object:
    """The `Idempotency-Key` header of a creating POST: a retry with the same key returns what it first created."""
    return Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description=f"retry-safe creation: the same key returns the {what} it first created",
    )
