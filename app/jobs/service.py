"""The rules of the jobs domain: what may be created, cancelled, deleted, and how results are shaped."""

from __future__ import annotations

import logging
import math
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.training.spec import FromJobModel, HuggingFaceModel, JobSpec

from ..errors import Conflict, NotFound, TooManyRequests, Unprocessable
from ..settings import Settings
from . import repository as repo
from .models import Checkpoint, Job

log = logging.getLogger(__name__)


# --- creation -------------------------------------------------------------------------------------


def _non_finite_path(value: Any, path: list[str | int]) -> list[str | int] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if (found := _non_finite_path(item, [*path, key])) is not None:
            return found
    return None


def effective_spec(spec: JobSpec, settings: Settings) -> dict[str, Any]:
    """The spec as stored: JSON-ready, with the server's caps checked and the runtime cap filled in."""
    stored = spec.model_dump(mode="json")
    if (path := _non_finite_path(stored, ["body"])) is not None:
        raise Unprocessable(path, "must be a finite number")
    hp = spec.hyperparameters
    if hp.epochs > settings.max_epochs:
        raise Unprocessable(["body", "hyperparameters", "epochs"], f"at most {settings.max_epochs} on this server")
    if hp.max_steps is not None and hp.max_steps > settings.max_steps:
        raise Unprocessable(["body", "hyperparameters", "max_steps"], f"at most {settings.max_steps} on this server")
    cap = settings.max_runtime_seconds
    if cap is not None:
        if spec.max_runtime_seconds is not None and spec.max_runtime_seconds > cap:
            raise Unprocessable(["body", "max_runtime_seconds"], f"at most {cap} on this server")
        stored["max_runtime_seconds"] = spec.max_runtime_seconds or cap
    return stored


def _same_request(spec: JobSpec, existing: Job) -> bool:
    requested = spec.model_dump(mode="json")
    if spec.max_runtime_seconds is None:  # the server may have filled in its cap
        requested["max_runtime_seconds"] = existing.spec.get("max_runtime_seconds")
    return requested == existing.spec


def _replay(spec: JobSpec, existing: Job) -> Job:
    if not _same_request(spec, existing):
        raise Conflict(
            "this Idempotency-Key was already used for a different job spec "
            f"(job {existing.id}); use a new key for a new job"
        )
    return existing


def _check_datasets(session: Session, spec: JobSpec, owner: str | None) -> list[str]:
    """The uploaded datasets the job reads: the owner's, fitting the task and field mapping (422 naming
    data.train / data.validation otherwise), share-locked so they cannot be deleted under the new job."""
    from ..datasets.service import check_job_datasets

    return [d.id for d in check_job_datasets(session, spec, owner, lock=True)]


def _check_huggingface(spec: JobSpec) -> None:
    """An absolute model.huggingface path must be a model folder (config.json) here: the API, the workers and
    the model files share a machine or a volume. Hub ids and relative paths are the worker's to check."""
    model = spec.model
    if isinstance(model, HuggingFaceModel) and model.huggingface.startswith("/"):
        from pathlib import Path

        if not (Path(model.huggingface) / "config.json").is_file():
            raise Unprocessable(["body", "model", "huggingface"], f"{model.huggingface} is not a Hugging Face model "
                                "directory on this server (a folder with config.json and weights)")


def _check_base(session: Session, model: FromJobModel, owner: str | None) -> tuple[str, str]:
    """The job and checkpoint a transfer-learning job starts from, resolved now (best/last -> an id)."""
    base = repo.get_job(session, model.from_job, owner)
    if base is None:
        raise Unprocessable(["body", "model", "from_job"], f"no job with id {model.from_job}")
    if base.status != "succeeded":
        raise Unprocessable(["body", "model", "from_job"], f"job {base.id} is {base.status}; it must have succeeded")
    checkpoint = repo.resolve_checkpoint(session, base, model.checkpoint)
    if checkpoint is None:
        raise Unprocessable(["body", "model", "checkpoint"], f"job {base.id} has no checkpoint {model.checkpoint!r}")
    return base.id, checkpoint.id


def create_job(
    session: Session, settings: Settings, owner: str | None, spec: JobSpec, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Store a queued job; returns (job, created). With an idempotency key seen before: (that job, False).

    Flushes only; the caller commits and then enqueues (never before the row is visible to workers).
    """
    if idempotency_key is not None and (existing := repo.get_job_by_idempotency_key(session, owner, idempotency_key)):
        return _replay(spec, existing), False
    stored = effective_spec(spec, settings)
    _check_huggingface(spec)
    dataset_ids = _check_datasets(session, spec, owner)
    base_job_id = base_checkpoint_id = None
    if isinstance(spec.model, FromJobModel):
        base_job_id, base_checkpoint_id = _check_base(session, spec.model, owner)
    cap = settings.max_running_jobs_per_owner
    if cap is not None and repo.count_active_jobs(session, owner) >= cap:
        raise TooManyRequests(f"at most {cap} queued or running jobs per owner; wait for one to finish or cancel one")
    job = Job(
        owner=owner,
        name=spec.name,
        status="queued",
        spec=stored,
        queue=spec.queue,
        max_attempts=settings.max_attempts,
        idempotency_key=idempotency_key,
        base_job_id=base_job_id,
        base_checkpoint_id=base_checkpoint_id,
        latest_metrics={},
    )
    try:
        repo.add_job(session, job, dataset_ids)
        repo.add_event(session, job.id, "created", f"job created on queue {job.queue!r}")
    except IntegrityError:
        # A concurrent request with the same key won the race: the unique constraint chose one job.
        session.rollback()
        if idempotency_key is None or not (existing := repo.get_job_by_idempotency_key(session, owner, idempotency_key)):
            raise
        return _replay(spec, existing), False
    return job, True


def enqueue(session: Session, settings: Settings, job: Job) -> bool:
    """Send the committed job to its queue. A broker outage does not lose the job: it stays queued, an
    event says so, and the worker's reaper re-sends queued jobs that no worker has claimed. A queue that no
    live worker consumes gets a warning event, so a job that will wait says why."""
    try:
        from worker.celery_app import enqueue_job  # lazy: keeps Celery out of import time

        enqueue_job(job.id, job.queue, settings)
    except Exception as exc:  # the broker's errors are many and library-specific
        log.warning("could not enqueue job %s: %s", job.id, exc)
        repo.add_event(
            session,
            job.id,
            "enqueue_failed",
            f"the broker could not be reached ({type(exc).__name__}); the job stays queued and is sent again later",
            level="warning",
        )
        return False
    if (why := _unconsumed_queue(settings, job.queue)) is not None:
        repo.add_event(session, job.id, "no_worker", why, level="warning")
    return True


def _unconsumed_queue(settings: Settings, queue: str) -> str | None:
    """The advisory no_worker check, in a session of its own: the job is committed and enqueued by now, and
    a failure here (the database gone a moment, a workers table not migrated yet) must not fail the request,
    or a client would retry and create the job twice."""
    from ..db import session_scope
    from ..workers.service import unconsumed_queue_message

    try:
        with session_scope(settings.database_url) as check:
            return unconsumed_queue_message(check, settings, queue)
    except Exception:  # noqa: BLE001 - advisory only
        log.warning("could not check which workers consume queue %r", queue, exc_info=True)
        return None


# --- reading, cancelling, deleting --------------------------------------------------------------


def get_job(session: Session, owner: str | None, job_id: str) -> Job:
    job = repo.get_job(session, job_id, owner)
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    return job


def cancel_job(session: Session, owner: str | None, job_id: str) -> Job:
    job = get_job(session, owner, job_id)
    if repo.cancel_if_queued(session, job.id):
        repo.add_event(session, job.id, "cancelled", "cancelled before it started")
    elif repo.request_cancel_if_running(session, job.id):
        if not job.cancel_requested:
            repo.add_event(session, job.id, "cancel_requested", "cancellation requested; the job stops at its next step")
    else:
        session.refresh(job)
        raise Conflict(f"job {job.id} is already {job.status}; only queued or running jobs can be cancelled")
    session.refresh(job)
    return job


def delete_job(session: Session, owner: str | None, job_id: str) -> str:
    """Delete a job that is not running (cancel a running one first). Returns the id; the caller commits
    and then removes the artifacts, so a failed commit never leaves rows pointing at deleted files."""
    job = get_job(session, owner, job_id)
    running = f"job {job.id} is running; cancel it first (POST /jobs/{job.id}/cancel), then delete it"
    if job.status == "running":
        raise Conflict(running)
    if repo.has_active_dependents(session, job.id):
        raise Conflict(f"job {job.id} is the base of an active job (model.from_job); wait for it or cancel it")
    if not repo.delete_job_unless_running(session, job.id):
        raise Conflict(running)  # a worker claimed it a moment ago
    return job.id


def checkpoint_of(session: Session, job: Job, ref: str) -> Checkpoint:
    checkpoint = repo.resolve_checkpoint(session, job, ref)
    if checkpoint is None:
        raise NotFound(f"job {job.id} has no checkpoint {ref!r}")
    return checkpoint


# --- metrics --------------------------------------------------------------------------------------


def downsample(points: list[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """At most max_points, keeping the first and last point and each bucket's min and max.

    The interior is cut into (max_points - 2) // 2 buckets of consecutive points; every bucket keeps
    its lowest and highest value, so spikes and the global extremes survive (a min/max cousin of LTTB).
    """
    n = len(points)
    if n <= max_points:
        return points
    first, last = 0, n - 1
    keep: set[int] = {first, last}
    inner = range(1, n - 1)
    buckets = (max_points - 2) // 2

    def rank(i: int) -> float:  # NaN sorts nowhere; treat it as neither min nor max
        v = points[i][1]
        return v if math.isfinite(v) else math.nan

    def extremes(indexes: range) -> tuple[int, int] | None:
        finite = [i for i in indexes if not math.isnan(rank(i))]
        if not finite:
            return None
        return min(finite, key=rank), max(finite, key=rank)

    if buckets == 0:
        found = extremes(inner)
        if found and max_points > 2:  # room for one more: the extreme farthest from the ends' level
            level = (rank(first) + rank(last)) / 2 if not math.isnan(rank(first) + rank(last)) else 0.0
            keep.add(max(found, key=lambda i: abs(points[i][1] - level)))
    else:
        size = len(inner) / buckets
        for b in range(buckets):
            start, stop = 1 + int(b * size), 1 + int((b + 1) * size)
            if found := extremes(range(start, min(stop, n - 1))):
                keep.update(found)
    return [points[i] for i in sorted(keep)]


def metric_series(
    session: Session, job: Job, names: list[str] | None, max_points: int
) -> dict[str, list[tuple[int, float]]]:
    series = repo.metric_points(session, job.id, names)
    return {name: downsample(points, max_points) for name, points in series.items()}
