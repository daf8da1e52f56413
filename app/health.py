"""Liveness (/health: the process answers) and readiness (/ready: database and broker reachable).

Both are open even when API keys are on: probes (compose, Kubernetes) carry no secrets, and neither
reveals anything but up/down.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from .db import get_engine
from .deps import SettingsDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    database: str
    broker: str


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health()


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}})
def ready(settings: SettingsDep) -> JSONResponse:
    database = broker = "ok"
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach it means not ready
        log.warning("readiness: database unreachable: %s", exc)
        database = f"unavailable ({type(exc).__name__})"
    try:
        from worker.celery_app import broker_ping  # lazy: keeps Celery out of import time

        broker_ping(timeout=2.0, settings=settings)
    except Exception as exc:
        log.warning("readiness: broker unreachable: %s", exc)
        broker = f"unavailable ({type(exc).__name__})"
    body = Readiness(database=database, broker=broker)
    code = 200 if database == broker == "ok" else 503
    return JSONResponse(body.model_dump(), status_code=code)
