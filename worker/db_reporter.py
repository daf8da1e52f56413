"""A Reporter that writes what the training core reports as SQL rows.

Metrics are buffered and upserted in batches keyed by (job, name, step), so a run resumed from a checkpoint
overwrites the points it repeats instead of duplicating them, and a step costs no transaction. Progress is
written with the same throttle; events and checkpoints are written at once (they are rare).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from app.db import session_scope, utcnow
from app.jobs.models import Checkpoint, Job, JobEvent, MetricPoint, new_id
from app.settings import Settings
from app.storage import ArtifactStore, checkpoint_prefix
from worker.training.reporting import CheckpointInfo, Level

log = logging.getLogger(__name__)


def upsert(session: Session, model: type, rows: list[dict[str, Any]], keys: list[str], update_cols: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, on PostgreSQL and SQLite."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the service supports these two
        raise NotImplementedError(f"upsert on {dialect}")
    stmt = insert(model).values(rows)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: getattr(stmt.excluded, c) for c in update_cols})
    session.execute(stmt)


class DbReporter:
    def __init__(self, job_id: str, settings: Settings, *, lease_owner: str | None = None,
                 should_stop: Callable[[], bool] = lambda: False, store: ArtifactStore | None = None,
                 upload_checkpoints: bool = False) -> None:
        self.job_id = job_id
        self.lease_owner = lease_owner
        self.flush_seconds = settings.metrics_flush_seconds
        self._should_stop = should_stop
        self._store = store
        self._upload = upload_checkpoints
        self._points: dict[tuple[str, int], float] = {}
        self._latest: dict[str, float] = {}
        self._progress: tuple[int, int, float] | None = None
        self._last_flush = time.monotonic()

    # --- the Reporter protocol ----------------------------------------------------------------

    def metrics(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            value = float(value)
            self._points[(name, int(step))] = value
            self._latest[name] = value
        self._maybe_flush()

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        self._progress = (int(step), int(total_steps), float(epoch))
        self._maybe_flush()

    def event(self, level: Level, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        with session_scope() as session:
            session.add(JobEvent(job_id=self.job_id, level=level, type=type, message=message, data=data))

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        prefix = checkpoint_prefix(self.job_id, info.name)
        if self._upload and self._store is not None:
            self._store.upload_dir(info.path, prefix)
        self.flush()  # the metrics up to a checkpoint are stored before the checkpoint is listed
        row = {
            "id": new_id(), "job_id": self.job_id, "name": info.name, "step": info.step, "epoch": info.epoch,
            "metrics": dict(info.metrics), "size_bytes": info.size_bytes, "sha256": info.sha256,
            "storage_key": prefix, "is_best": info.is_best, "is_final": info.is_final, "created_at": utcnow(),
        }
        with session_scope() as session:
            if info.is_best:  # one best per job
                session.execute(
                    update(Checkpoint).where(Checkpoint.job_id == self.job_id, Checkpoint.name != info.name)
                    .values(is_best=False).execution_options(synchronize_session=False)
                )
            upsert(session, Checkpoint, [row], ["job_id", "name"],
                   ["step", "epoch", "metrics", "size_bytes", "sha256", "storage_key", "is_best", "is_final",
                    "created_at"])

    def checkpoint_removed(self, name: str) -> None:
        with session_scope() as session:
            session.execute(delete(Checkpoint).where(Checkpoint.job_id == self.job_id, Checkpoint.name == name))
        if self._upload and self._store is not None:
            self._store.delete_prefix(checkpoint_prefix(self.job_id, name))

    def should_stop(self) -> bool:
        return self._should_stop()

    # --- batching -------------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered metric points, progress and latest metrics in one transaction."""
        self._last_flush = time.monotonic()
        if not self._points and self._progress is None:
            return
        points = [{"job_id": self.job_id, "name": n, "step": s, "value": v} for (n, s), v in self._points.items()]
        values: dict[str, Any] = {}
        if self._progress is not None:
            step, total, epoch = self._progress
            values.update(progress_step=step, progress_total_steps=total, progress_epoch=epoch)
        if self._latest:
            values["latest_metrics"] = dict(self._latest)
        with session_scope() as session:
            # Large batches in chunks: SQLite caps bound parameters per statement.
            for i in range(0, len(points), 500):
                upsert(session, MetricPoint, points[i:i + 500], ["job_id", "name", "step"], ["value"])
            if values:
                where = [Job.id == self.job_id]
                if self.lease_owner is not None:
                    where.append(Job.lease_owner == self.lease_owner)
                session.execute(update(Job).where(*where).values(updated_at=utcnow(), **values)
                                .execution_options(synchronize_session=False))
        self._points.clear()
        self._progress = None

    def close(self) -> None:
        try:
            self.flush()
        except Exception:  # the outcome must still be recorded
            log.warning("final metrics flush for job %s failed", self.job_id, exc_info=True)
