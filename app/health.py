"""Liveness (/health: the process answers) and readiness (/ready: database and broker reachable).

/health is the one route open when API keys exist (compose and the Dockerfile probe it). /ready names
the failing dependency, so it follows the API-key rule like every other route; while the database is
down a key cannot be checked, and /ready answers its 503 (which dependency is down) to anyone.
"""

from __future__ import annotations

import logging

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel
from sqlalchemy import text

from .auth import resolve_owner
from .db import get_engine, session_scope
from .deps import SettingsDep, bearer

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    database: str
    broker: str


@router.get("/health", response_model=Health)
async def health() -> Health:
    return Health()


UNAUTHORIZED = {"content": {"application/json": {"schema": {"type": "object", "properties": {"detail": {}}}}},
                "description": "missing, invalid or revoked API key (when keys exist)"}


@router.get("/ready", response_model=Readiness,
            responses={401: UNAUTHORIZED, 503: {"model": Readiness, "description": "not ready"}})
def ready(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> JSONResponse:
    database = broker = "ok"
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach it means not ready
        log.warning("readiness: database unreachable: %s", exc)
        database = f"unavailable ({type(exc).__name__})"
    if database == "ok":  # a key can only be checked with the database; down, the answer is a 503 anyway
        with session_scope(settings.database_url) as session:
            resolve_owner(session, credentials)  # 401 without a valid key once keys exist
    try:
        from worker.celery_app import broker_ping  # lazy: keeps Celery out of import time

        broker_ping(timeout=2.0, settings=settings)
    except Exception as exc:
        log.warning("readiness: broker unreachable: %s", exc)
        broker = f"unavailable ({type(exc).__name__})"
    body = Readiness(database=database, broker=broker)
    code = 200 if database == broker == "ok" else 503
    return JSONResponse(body.model_dump(), status_code=code)
