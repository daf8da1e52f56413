"""Every query of the jobs domain. Functions take a session and flush at most; the request commits."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from ..auth import owned_by
from ..db import utcnow
from .models import ACTIVE_STATUSES, Checkpoint, Job, JobDataset, JobEvent, MetricPoint

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def normalize_id(value: str) -> str | None:
    """Ids are lowercase UUIDs; anything else (traversal-looking strings, NULs) matches nothing."""
    value = value.strip().lower()
    return value if _UUID.match(value) else None


def get_job(session: Session, job_id: str, owner: str | None, *, for_update: bool = False) -> Job | None:
    job_id_ok = normalize_id(job_id)
    if job_id_ok is None:
        return None
    query = select(Job).where(Job.id == job_id_ok, owned_by(Job.owner, owner))
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def get_job_by_idempotency_key(session: Session, owner: str | None, key: str) -> Job | None:
    return session.scalar(select(Job).where(owned_by(Job.owner, owner), Job.idempotency_key == key))


def list_jobs(
    session: Session, owner: str | None, *, status: str | None, limit: int, after: tuple[datetime, str] | None
) -> list[Job]:
    """Newest first, keyset-paginated on (created_at, id) so pages never skip or repeat under inserts."""
    query = select(Job).where(owned_by(Job.owner, owner))
    if status is not None:
        query = query.where(Job.status == status)
    if after is not None:
        created, id = after
        query = query.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < id)))
    return list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)))


def count_active_jobs(session: Session, owner: str | None) -> int:
    return session.scalar(
        select(func.count()).select_from(Job).where(owned_by(Job.owner, owner), Job.status.in_(ACTIVE_STATUSES))
    ) or 0


def add_job(session: Session, job: Job, dataset_ids: list[str]) -> Job:
    session.add(job)
    session.flush()
    for dataset_id in dict.fromkeys(dataset_ids):
        session.add(JobDataset(job_id=job.id, dataset_id=dataset_id))
    session.flush()
    return job


def add_event(
    session: Session, job_id: str, type: str, message: str, *, level: str = "info", data: dict[str, Any] | None = None
) -> JobEvent:
    event = JobEvent(job_id=job_id, type=type, message=message, level=level, data=data)
    session.add(event)
    session.flush()
    return event


def cancel_if_queued(session: Session, job_id: str) -> bool:
    """Cancel at once, but only while still queued: a worker claiming it at the same moment wins or loses cleanly."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def request_cancel_if_running(session: Session, job_id: str) -> bool:
    """Flag a running job; its worker checks the flag at each step and stops as cancelled."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(cancel_requested=True, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def has_active_dependents(session: Session, job_id: str) -> bool:
    """Active jobs fine-tuning from this job's checkpoints (model.from_job)."""
    query = select(Job.id).where(Job.base_job_id == job_id, Job.status.in_(ACTIVE_STATUSES)).limit(1)
    return session.scalar(query) is not None


def delete_job_unless_running(session: Session, job_id: str) -> bool:
    """Delete the row (events, metrics, checkpoints and dataset links cascade) unless a worker runs it."""
    result = session.execute(
        delete(Job).where(Job.id == job_id, Job.status != "running").execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def list_events(session: Session, job_id: str, *, after: int, limit: int) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after).order_by(JobEvent.id).limit(limit)
    return list(session.scalars(query))


def metric_points(session: Session, job_id: str, names: list[str] | None) -> dict[str, list[tuple[int, float]]]:
    query = select(MetricPoint.name, MetricPoint.step, MetricPoint.value).where(MetricPoint.job_id == job_id)
    if names is not None:
        query = query.where(MetricPoint.name.in_(names))
    series: dict[str, list[tuple[int, float]]] = {}
    for name, step, value in session.execute(query.order_by(MetricPoint.name, MetricPoint.step)):
        series.setdefault(name, []).append((step, value))
    return series


def list_checkpoints(session: Session, job_id: str) -> list[Checkpoint]:
    query = select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step, Checkpoint.created_at)
    return list(session.scalars(query))


def resolve_checkpoint(session: Session, job: Job, ref: str) -> Checkpoint | None:
    """`best`, `last` or a checkpoint id of this job; `best` is the latest one when no best was marked."""
    base = select(Checkpoint).where(Checkpoint.job_id == job.id)
    result = job.result if isinstance(job.result, dict) else {}
    if ref in ("best", "last"):
        flag = Checkpoint.is_best if ref == "best" else Checkpoint.is_final
        found = session.scalar(base.where(flag.is_(True)).order_by(Checkpoint.step.desc()).limit(1))
        if found is not None:
            return found
        recorded = result.get("best_checkpoint_id" if ref == "best" else "final_checkpoint_id")
        if isinstance(recorded, str) and (found := session.scalar(base.where(Checkpoint.id == recorded))):
            return found
        # No flag recorded (no validation set, or a cancelled run): the latest checkpoint stands in.
        return session.scalar(base.order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc()).limit(1))
    checkpoint_id = normalize_id(ref)
    return None if checkpoint_id is None else session.scalar(base.where(Checkpoint.id == checkpoint_id))
