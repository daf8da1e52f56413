"""GET /workers: the live workers, their queues and concurrency (what a platform team checks first when
jobs sit queued)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from ..deps import SessionDep, SettingsDep
from ..jobs.schemas import ErrorBody
from . import service

router = APIRouter(prefix="/workers", tags=["workers"])
ERRORS = {401: {"model": ErrorBody, "description": "missing, invalid or revoked API key"},
          503: {"model": ErrorBody, "description": "database unavailable"}}


class WorkerRead(BaseModel):
    name: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_seen_at: datetime


@router.get("", response_model=list[WorkerRead], responses=ERRORS)
def list_workers(session: SessionDep, settings: SettingsDep) -> list[WorkerRead]:
    """Workers that reported within three heartbeat intervals (FINETUNE_LEASE_SECONDS / 4 each)."""
    return [WorkerRead.model_validate(w, from_attributes=True) for w in service.live_workers(session, settings)]
