"""Queries on datasets; the service holds the rules, the request's unit of work commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..auth import owned_by
from ..jobs.models import ACTIVE_STATUSES, Job, JobDataset
from .models import Dataset


def get(
    session: Session, dataset_id: str, owner: str | None, *, lock: bool = False, shared: bool = False
) -> Dataset | None:
    """One owner's dataset. lock: FOR UPDATE (delete); shared: FOR SHARE (a job being created reads it)."""
    query = select(Dataset).where(Dataset.id == dataset_id, owned_by(Dataset.owner, owner))
    if lock or shared:
        query = query.with_for_update(read=shared and not lock)
    return session.scalars(query).first()


def get_by_idempotency_key(session: Session, owner: str | None, key: str) -> Dataset | None:
    query = select(Dataset).where(owned_by(Dataset.owner, owner), Dataset.idempotency_key == key)
    return session.scalars(query.order_by(Dataset.created_at, Dataset.id)).first()


def list_page(
    session: Session, owner: str | None, limit: int, after: tuple[datetime, str] | None = None
) -> list[Dataset]:
    """Newest first; `after` is the (created_at, id) of the last row of the previous page."""
    query = select(Dataset).where(owned_by(Dataset.owner, owner))
    if after is not None:
        created, last_id = after
        query = query.where(
            or_(Dataset.created_at < created, and_(Dataset.created_at == created, Dataset.id < last_id))
        )
    query = query.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit)
    return list(session.scalars(query))


def add(session: Session, dataset: Dataset) -> bool:
    """Insert in a savepoint; False when the (owner, idempotency_key) pair already exists (a racing twin)."""
    try:
        with session.begin_nested():
            session.add(dataset)
    except IntegrityError:
        if dataset.idempotency_key is None:
            raise
        return False
    return True


def active_jobs_using(session: Session, dataset_id: str, limit: int = 5) -> list[str]:
    """Ids of queued or running jobs that read the dataset (a few, for the error message)."""
    query = (
        select(Job.id)
        .join(JobDataset, JobDataset.job_id == Job.id)
        .where(JobDataset.dataset_id == dataset_id, Job.status.in_(ACTIVE_STATUSES))
        .order_by(Job.created_at, Job.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def delete(session: Session, dataset: Dataset) -> None:
    session.delete(dataset)
    session.flush()
