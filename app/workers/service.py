"""Worker presence: a worker is live while its last heartbeat is recent (three heartbeat intervals)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..db import upsert, utcnow
from ..settings import Settings
from .models import Worker

# Rows of workers that vanished without saying goodbye (SIGKILL, a lost machine) are pruned after this.
FORGET_AFTER = timedelta(days=1)


def live_after(settings: Settings) -> datetime:
    return utcnow() - timedelta(seconds=3 * settings.heartbeat_seconds)


def record_heartbeat(session: Session, *, name: str, hostname: str, pid: int, queues: list[str], concurrency: int,
                     started_at: datetime) -> None:
    now = utcnow()
    upsert(session, Worker, [{"name": name, "hostname": hostname, "pid": pid, "queues": sorted(set(queues)),
                              "concurrency": concurrency, "started_at": started_at, "last_seen_at": now}],
           ["name"], ["hostname", "pid", "queues", "concurrency", "started_at", "last_seen_at"])
    session.execute(delete(Worker).where(Worker.last_seen_at < now - FORGET_AFTER))


def remove(session: Session, name: str) -> None:
    session.execute(delete(Worker).where(Worker.name == name))


def live_workers(session: Session, settings: Settings) -> list[Worker]:
    return list(session.scalars(
        select(Worker).where(Worker.last_seen_at >= live_after(settings)).order_by(Worker.name)))


def unconsumed_queue_message(session: Session, settings: Settings, queue: str) -> str | None:
    """Why a job on this queue will wait, or None when a live worker consumes it."""
    workers = live_workers(session, settings)
    if any(queue in w.queues for w in workers):
        return None
    consumed = sorted({q for w in workers for q in w.queues})
    seen = (f"live workers consume {', '.join(repr(q) for q in consumed)}" if consumed
            else "no worker is running")
    return (f"no live worker consumes queue {queue!r} ({seen}); the job waits until one does: "
            f"start one with `finetune worker --queues {queue}`")
