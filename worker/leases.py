"""The job lease: claim, heartbeat, finish, and the reaper that heals jobs whose worker died.

A worker owns a running job while `lease_expires_at` is in the future; every state change is one
conditional UPDATE, so two workers (or a redelivered message) can never both run a job, and a worker that
lost its lease can no longer write the job's outcome.

The reaper runs as a small thread in every worker's main process (see worker.tasks); several reapers are
safe because each change is conditional. It (1) puts running jobs whose lease expired back to `queued` and
re-enqueues them (or fails them after max_attempts), and (2) re-enqueues jobs left `queued` without a
broker message (an enqueue that failed, or a filesystem-broker message lost with a killed worker).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from app.db import session_scope, utcnow
from app.jobs.models import Job, JobEvent
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


def new_lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def add_event(session, job_id: str, type: str, message: str, level: str = "info", data: dict | None = None) -> None:  # noqa: ANN001
    session.add(JobEvent(job_id=job_id, type=type, message=message, level=level, data=data))


@dataclass(frozen=True)
class Claim:
    job_id: str
    owner: str
    attempt: int


def claim_job(job_id: str, owner: str, settings: Settings | None = None) -> Claim | None:
    """Atomically take a job: queued, or running under an expired lease. None when not claimable."""
    settings = settings or get_settings()
    now = utcnow()
    claimable = (Job.status == "queued") | ((Job.status == "running") & (Job.lease_expires_at < now))
    with session_scope() as session:
        started = session.execute(select(Job.started_at).where(Job.id == job_id)).scalar_one_or_none()
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False), Job.attempts < Job.max_attempts)
            .values(
                status="running",
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=settings.lease_seconds),
                attempts=Job.attempts + 1,
                started_at=started or now,
                finished_at=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return None
        attempt = session.execute(select(Job.attempts).where(Job.id == job_id)).scalar_one()
        add_event(session, job_id, "claimed", f"claimed by worker {owner} (attempt {attempt})",
                  data={"worker": owner, "attempt": attempt})
    return Claim(job_id=job_id, owner=owner, attempt=attempt)


def renew_lease(claim: Claim, settings: Settings) -> tuple[bool, bool]:
    """Extend the lease; returns (still owned, cancel requested)."""
    now = utcnow()
    with session_scope() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == claim.job_id, Job.lease_owner == claim.owner, Job.status == "running")
            .values(lease_expires_at=now + timedelta(seconds=settings.lease_seconds))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False, False
        cancel = session.execute(select(Job.cancel_requested).where(Job.id == claim.job_id)).scalar_one()
    return True, bool(cancel)


def read_cancel(claim: Claim) -> tuple[bool, bool]:
    """(still owned, cancel requested), without renewing: a cheap read done about once a second."""
    with session_scope() as session:
        row = session.execute(
            select(Job.lease_owner, Job.status, Job.cancel_requested).where(Job.id == claim.job_id)
        ).one_or_none()
    if row is None:
        return False, False
    return row.lease_owner == claim.owner and row.status == "running", bool(row.cancel_requested)


def finish_job(claim: Claim, status: str, *, error_type: str | None = None, error_message: str | None = None,
               result: dict[str, Any] | None = None, event_type: str | None, event_message: str = "",
               level: str = "info", data: dict | None = None) -> bool:
    """Record the outcome and clear the lease; False (nothing written) when the lease was lost."""
    now = utcnow()
    with session_scope() as session:
        updated = session.execute(
            update(Job)
            .where(Job.id == claim.job_id, Job.lease_owner == claim.owner, Job.status == "running")
            .values(status=status, finished_at=now, updated_at=now, lease_owner=None, lease_expires_at=None,
                    error_type=error_type, error_message=error_message, result=result)
            .execution_options(synchronize_session=False)
        )
        if updated.rowcount != 1:
            return False
        if event_type is not None:
            add_event(session, claim.job_id, event_type, event_message, level=level, data=data)
    return True


def hand_back(claim: Claim, reason: str) -> str | None:
    """Return a job this worker stops on purpose (shutdown) to the queue; the attempt is not counted.
    Returns the job's queue (to enqueue after commit), or None when the lease was already lost."""
    now = utcnow()
    with session_scope() as session:
        updated = session.execute(
            update(Job)
            .where(Job.id == claim.job_id, Job.lease_owner == claim.owner, Job.status == "running")
            .values(status="queued", lease_owner=None, lease_expires_at=None, updated_at=now,
                    attempts=Job.attempts - 1)
            .execution_options(synchronize_session=False)
        )
        if updated.rowcount != 1:
            return None
        add_event(session, claim.job_id, "requeued", f"requeued: {reason}", level="warning")
        return session.execute(select(Job.queue).where(Job.id == claim.job_id)).scalar_one()


def release_lease(claim: Claim) -> None:
    """Clear the lease of a job left running (should not happen; the reaper then requeues at once)."""
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == claim.job_id, Job.lease_owner == claim.owner)
            .values(lease_owner=None, lease_expires_at=utcnow())
            .execution_options(synchronize_session=False)
        )


class Heartbeat(threading.Thread):
    """Renews the lease and refreshes the stop flags, so the core's should_stop() is a cheap read."""

    def __init__(self, claim: Claim, settings: Settings, max_runtime_seconds: int | None = None) -> None:
        super().__init__(name=f"heartbeat-{claim.job_id[:8]}", daemon=True)
        self.claim = claim
        self.settings = settings
        self.cancel_requested = False
        self.lease_lost = False
        self.timed_out = False
        self._deadline = None if max_runtime_seconds is None else utcnow() + timedelta(seconds=max_runtime_seconds)
        self._done = threading.Event()

    @property
    def stop_requested(self) -> bool:
        return self.cancel_requested or self.lease_lost or self.timed_out

    def run(self) -> None:
        poll = min(1.0, self.settings.heartbeat_seconds)
        last_renew = utcnow()
        while not self._done.wait(poll):
            try:
                now = utcnow()
                if (now - last_renew).total_seconds() >= self.settings.heartbeat_seconds:
                    owned, cancel = renew_lease(self.claim, self.settings)
                    last_renew = now
                else:
                    owned, cancel = read_cancel(self.claim)
                self.lease_lost = self.lease_lost or not owned
                self.cancel_requested = self.cancel_requested or cancel
                if self._deadline is not None and now >= self._deadline:
                    self.timed_out = True
            except Exception:  # a database blip: keep training, the lease has slack for a few misses
                log.warning("heartbeat for job %s failed", self.claim.job_id, exc_info=True)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


# --- the reaper -----------------------------------------------------------------------------------


def stale_queued_after(settings: Settings) -> timedelta:
    """How long a queued job may sit before the reaper checks whether its message still exists."""
    return timedelta(seconds=max(30, 2 * settings.lease_seconds))


def reap_expired_leases(settings: Settings | None = None) -> list[tuple[str, str]]:
    """Running jobs whose lease expired: back to queued (or failed after max_attempts, or cancelled).

    Returns (job_id, queue) of the requeued jobs, to enqueue after commit.
    """
    now = utcnow()
    requeued: list[tuple[str, str]] = []
    expired = (Job.status == "running") & (Job.lease_expires_at < now)
    with session_scope() as session:
        rows = session.execute(
            select(Job.id, Job.queue, Job.attempts, Job.max_attempts, Job.cancel_requested, Job.lease_owner)
            .where(expired)
        ).all()
        for row in rows:
            if row.cancel_requested:
                values: dict[str, Any] = dict(status="cancelled", finished_at=now)
                event = ("cancelled", "cancelled: its worker stopped answering after cancellation was requested", "info")
            elif row.attempts >= row.max_attempts:
                message = (f"lease expired (worker {row.lease_owner} stopped answering) after "
                           f"{row.attempts} of {row.max_attempts} attempts")
                values = dict(status="failed", finished_at=now, error_type="lease_expired", error_message=message)
                event = ("failed", f"failed: {message}", "error")
            else:
                values = dict(status="queued")
                event = ("requeued", f"requeued: lease expired (worker {row.lease_owner} stopped answering)", "warning")
            done = session.execute(
                update(Job)
                .where(Job.id == row.id, expired)
                .values(lease_owner=None, lease_expires_at=None, updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount == 1:
                add_event(session, row.id, event[0], event[1], level=event[2])
                if values["status"] == "queued":
                    requeued.append((row.id, row.queue))
    return requeued


def find_stale_queued(settings: Settings) -> list[tuple[str, str]]:
    """Queued jobs older than stale_queued_after whose broker message is missing; their updated_at is touched
    so each is re-enqueued at most once per period. Jobs on a broker we cannot inspect are left alone."""
    now = utcnow()
    cutoff = now - stale_queued_after(settings)
    with session_scope() as session:
        rows = session.execute(
            select(Job.id, Job.queue).where(Job.status == "queued", Job.updated_at < cutoff).limit(1000)
        ).all()
        if not rows:
            return []
        pending: dict[str, set[str] | None] = {}
        stale = []
        for row in rows:
            if row.queue not in pending:
                pending[row.queue] = pending_job_ids(row.queue, settings)
            ids = pending[row.queue]
            if ids is not None and row.id not in ids:
                stale.append((row.id, row.queue))
        for job_id, _ in stale:
            session.execute(
                update(Job).where(Job.id == job_id, Job.status == "queued").values(updated_at=now)
                .execution_options(synchronize_session=False)
            )
            add_event(session, job_id, "requeued", "requeued: no broker message found for this queued job",
                      level="warning")
    return stale


def _job_id_of(message: dict[str, Any]) -> str | None:
    task_id = (message.get("headers") or {}).get("id") or (message.get("properties") or {}).get("correlation_id")
    return task_id.split(".", 1)[0] if isinstance(task_id, str) else None


def pending_job_ids(queue: str, settings: Settings) -> set[str] | None:
    """Job ids with a message waiting (or delivered, unacked) on `queue`; None if the broker can't be inspected."""
    from worker.celery_app import filesystem_folders, is_filesystem_broker

    ids: set[str] = set()
    url = settings.broker_url
    if is_filesystem_broker(url):
        folder = filesystem_folders(settings)["data_folder_in"]
        for path in Path(folder).glob(f"*.{queue}.msg"):
            try:
                ids.add(_job_id_of(json.loads(path.read_bytes())) or "")
            except (OSError, ValueError):
                continue  # taken by a worker meanwhile
        return ids
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            for raw in client.lrange(queue, 0, -1):
                ids.add(_job_id_of(json.loads(raw)) or "")
            for raw in client.hvals("unacked"):
                ids.add(_job_id_of(json.loads(raw)[0]) or "")
        finally:
            client.close()
        return ids
    return None


def reap_once(settings: Settings | None = None) -> list[tuple[str, str]]:
    """One reaper pass; returns the (job_id, queue) pairs it enqueued."""
    from worker.celery_app import enqueue_job

    settings = settings or get_settings()
    todo = reap_expired_leases(settings) + find_stale_queued(settings)
    for job_id, queue in todo:
        try:
            enqueue_job(job_id, queue, settings)
        except Exception:  # the next pass finds it again (stale queued)
            log.warning("could not re-enqueue job %s", job_id, exc_info=True)
    if todo:
        log.info("reaper re-enqueued %d job(s): %s", len(todo), ", ".join(j for j, _ in todo))
    return todo


class Reaper(threading.Thread):
    """Runs reap_once every interval (about a quarter of the lease) until stopped."""

    def __init__(self, settings: Settings | None = None, interval: float | None = None) -> None:
        super().__init__(name="finetune-reaper", daemon=True)
        self.settings = settings or get_settings()
        self.interval = interval if interval is not None else max(1.0, self.settings.lease_seconds / 4)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                reap_once(self.settings)
            except Exception:
                log.warning("reaper pass failed", exc_info=True)
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()


