"""A Reporter that writes what the training core reports as SQL rows.

Metrics are buffered and upserted in batches keyed by (job, name, step), so a run resumed from a checkpoint
overwrites the points it repeats instead of duplicating them, and a step costs no transaction. Progress is
written with the same throttle; events and checkpoints are written at once (they are rare).

A short database outage does not fail the run: a metrics flush that cannot reach the database keeps its
buffer for the next one, and an event or checkpoint row is retried for up to half a lease (the heartbeat
keeps the lease meanwhile) before the error is let through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from app.db import session_scope, upsert, utcnow
from app.jobs.models import Checkpoint, Job, JobEvent, MetricPoint, new_id
from app.settings import Settings
from app.storage import ArtifactStore, checkpoint_prefix
from worker.training.reporting import CheckpointInfo, Level

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_outage(exc: BaseException) -> bool:
    """The database could not be reached (as opposed to a statement it refused)."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def retry_outage(write: Callable[[], T], budget_seconds: float, what: str) -> T:
    """Run a write, retrying it while the database is unreachable, for up to budget_seconds."""
    deadline = time.monotonic() + budget_seconds
    delay = 0.2
    while True:
        try:
            return write()
        except DBAPIError as exc:
            if not is_outage(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable while writing %s; retrying in %.1f s", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class DbReporter:
    def __init__(self, job_id: str, settings: Settings, *, lease_owner: str | None = None,
                 should_stop: Callable[[], bool] = lambda: False, store: ArtifactStore | None = None,
                 upload_checkpoints: bool = False) -> None:
        self.job_id = job_id
        self.lease_owner = lease_owner
        self.flush_seconds = settings.metrics_flush_seconds
        self.outage_budget = settings.lease_seconds / 2
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
        def write() -> None:
            with session_scope() as session:
                session.add(JobEvent(job_id=self.job_id, level=level, type=type, message=message, data=data))

        retry_outage(write, self.outage_budget, f"event {type}")

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        prefix = checkpoint_prefix(self.job_id, info.name)
        if self._upload and self._store is not None:
            self._store.upload_dir(info.path, prefix)
        retry_outage(self.flush, self.outage_budget, "metrics")  # stored before the checkpoint is listed
        row = {
            "id": new_id(), "job_id": self.job_id, "name": info.name, "step": info.step, "epoch": info.epoch,
            "metrics": dict(info.metrics), "size_bytes": info.size_bytes, "sha256": info.sha256,
            "storage_key": prefix, "is_best": info.is_best, "is_final": info.is_final, "created_at": utcnow(),
        }

        def write() -> None:
            with session_scope() as session:
                if info.is_best:  # one best per job
                    session.execute(
                        update(Checkpoint).where(Checkpoint.job_id == self.job_id, Checkpoint.name != info.name)
                        .values(is_best=False).execution_options(synchronize_session=False)
                    )
                upsert(session, Checkpoint, [row], ["job_id", "name"],
                       ["step", "epoch", "metrics", "size_bytes", "sha256", "storage_key", "is_best", "is_final",
                        "created_at"])

        retry_outage(write, self.outage_budget, f"checkpoint {info.name}")

    def checkpoint_removed(self, name: str) -> None:
        def write() -> None:
            with session_scope() as session:
                session.execute(delete(Checkpoint).where(Checkpoint.job_id == self.job_id, Checkpoint.name == name))

        retry_outage(write, self.outage_budget, f"removal of checkpoint {name}")
        if self._upload and self._store is not None:
            self._store.delete_prefix(checkpoint_prefix(self.job_id, name))

    def should_stop(self) -> bool:
        return self._should_stop()

    # --- batching -------------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            try:
                self.flush()
            except DBAPIError as exc:
                if not is_outage(exc):
                    raise
                # keep the buffer (flush clears it only after a commit) and train on; the next flush retries
                log.warning("metrics flush for job %s: database unreachable; kept for the next flush", self.job_id)

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
            retry_outage(self.flush, self.outage_budget, "metrics")
        except Exception:  # the outcome must still be recorded
            log.warning("final metrics flush for job %s failed", self.job_id, exc_info=True)
