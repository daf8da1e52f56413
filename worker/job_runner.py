"""Run one job: claim it, turn its stored spec into a RunConfig, run the core, record the outcome.

Torch is imported only once a job is claimed (inside worker.training.run_training), so a duplicate message
costs one UPDATE and nothing more.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from app.datasets.models import Dataset
from app.db import session_scope
from app.jobs.models import Checkpoint, Job
from app.settings import Settings, get_settings
from app.storage import ArtifactStore, get_store, job_prefix
from worker import shutdown
from worker.db_reporter import DbReporter
from worker.leases import Claim, Heartbeat, claim_job, finish_job, hand_back, new_lease_owner, release_lease
from worker.training.config import RunConfig
from worker.training.reporting import ConfigError, TrainingError, TrainingResult
from worker.training.spec import FromJobModel, JobSpec

log = logging.getLogger(__name__)

OOM_ADVICE = (
    "out of memory: the model and batch do not fit on this device. Lower hyperparameters.batch_size "
    "(and raise hyperparameters.gradient_accumulation_steps to keep the effective batch size), "
    "lower data.max_length, or use a smaller model"
)


# torch's CPU allocator says "can't allocate memory" / "not enough memory" (CUDA says "out of memory")
OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory")
# a full disk, a file-size quota, a read-only or unwritable store
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _local(store: ArtifactStore, key: str, scratch: Path) -> Path:
    """A local path for a stored key or prefix (the key itself on a local store; a download otherwise)."""
    local = store.local_dir(key)
    if local is not None:
        return local
    return store.download_dir(key, scratch / key)


def resolve_base_checkpoint(session, job: Job, ref: FromJobModel) -> Checkpoint:  # noqa: ANN001
    if job.base_checkpoint_id is not None:  # resolved at submission (best/last -> an id): the lineage holds
        stored = session.get(Checkpoint, job.base_checkpoint_id)
        if stored is None:
            raise ConfigError(f"model.from_job: checkpoint {job.base_checkpoint_id} of job {job.base_job_id} no "
                              "longer exists (deleted?)", field="model.checkpoint")
        return stored
    base = session.get(Job, ref.from_job)
    if base is None or base.owner != job.owner:
        raise ConfigError(f"model.from_job: job {ref.from_job} not found", field="model.from_job")
    query = select(Checkpoint).where(Checkpoint.job_id == base.id)
    if ref.checkpoint == "best":
        rows = session.execute(query.order_by(Checkpoint.is_best.desc(), Checkpoint.step.desc())).scalars().all()
    elif ref.checkpoint == "last":
        rows = session.execute(query.order_by(Checkpoint.step.desc())).scalars().all()
    else:
        rows = session.execute(query.where(Checkpoint.id == ref.checkpoint)).scalars().all()
    if not rows:
        what = "has no checkpoints" if ref.checkpoint in ("best", "last") else f"has no checkpoint {ref.checkpoint}"
        raise ConfigError(f"model.from_job: job {base.id} {what} (status {base.status})", field="model.checkpoint")
    return rows[0]


def fetch_latest_checkpoint(session, job_id: str, store: ArtifactStore, output_dir: Path) -> None:  # noqa: ANN001
    """Bring the job's newest stored checkpoint into output_dir, so that a job requeued onto another machine
    resumes from it instead of starting over. Downloaded under a `.tmp-` name (which the core never resumes
    from) and renamed when complete."""
    latest = session.execute(
        select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc()).limit(1)
    ).scalar_one_or_none()
    if latest is None:
        return
    target = output_dir / "checkpoints" / latest.name
    if target.is_dir():
        return  # this machine ran the job before: its copy is complete (renamed into place)
    partial = target.with_name(f".tmp-fetch-{latest.name}")
    shutil.rmtree(partial, ignore_errors=True)
    store.download_dir(latest.storage_key, partial)
    partial.rename(target)


def build_run_config(job_id: str, settings: Settings, store: ArtifactStore) -> RunConfig:
    """The core's config for a job: its spec, its output folder, its datasets and base checkpoint as files."""
    scratch = settings.home / "work" / job_id
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise ConfigError(f"job {job_id} disappeared")
        try:
            spec = JobSpec.model_validate(job.spec)
        except ValidationError as exc:
            raise ConfigError(f"stored spec is no longer valid: {exc}") from exc
        datasets: dict[str, tuple[Path, str]] = {}
        for dataset_id in spec.dataset_ids():
            row = session.get(Dataset, dataset_id)
            if row is None or row.owner != job.owner:
                field = "data.train" if dataset_id == spec.data.train else "data.validation"
                raise ConfigError(f"{field}: dataset {dataset_id} not found (deleted?)", field=field)
            datasets[dataset_id] = (_local(store, row.storage_key, scratch), row.format)
        base_checkpoint = None
        if isinstance(spec.model, FromJobModel):
            checkpoint = resolve_base_checkpoint(session, job, spec.model)
            if job.base_checkpoint_id is None:
                job.base_job_id, job.base_checkpoint_id = checkpoint.job_id, checkpoint.id
            base_checkpoint = _local(store, checkpoint.storage_key, scratch)
        output_dir = store.local_dir(job_prefix(job_id))
        if output_dir is None:  # a remote store: train in scratch, resume from what the store holds
            output_dir = scratch / "output"
            fetch_latest_checkpoint(session, job_id, store, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return RunConfig(
        spec=spec,
        output_dir=output_dir,
        datasets=datasets,
        base_checkpoint=base_checkpoint,
        compile_cache_dir=Path(settings.compile_cache_dir),
        allow_hub_downloads=settings.allow_hub_downloads,
    )


def runtime_limit(spec_limit: int | None, settings: Settings) -> int | None:
    limits = [x for x in (spec_limit, settings.max_runtime_seconds) if x]
    return min(limits) if limits else None


def _storage_errno(exc: BaseException) -> int | None:
    """The errno of a full or unwritable store: an OSError's, or one a native writer (safetensors' Rust
    I/O) reports only in its text as "(os error N)"."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in STORAGE_ERRNOS else None
    match = re.search(r"\(os error (\d+)\)", str(exc))
    return int(match.group(1)) if match and int(match.group(1)) in STORAGE_ERRNOS else None


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(error type, a message the user can act on)."""
    if isinstance(exc, TrainingError):
        message = str(exc)
        if exc.field and exc.field not in message:
            message = f"{exc.field}: {message}"
        return exc.type, message
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError" or any(m in text.lower() for m in OOM_MARKERS):
        return "out_of_memory", f"{OOM_ADVICE} ({name}: {text})" if text else OOM_ADVICE
    if (code := _storage_errno(exc)) is not None:
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        return "storage_error", (f"the artifact store refused a write: {os.strerror(code)}{where}; free space "
                                 "or fix its permissions, then resubmit (checkpoints written before are kept)")
    return name, text or name


def checkpoint_ids(job_id: str, names: list[str | None]) -> dict[str, str]:
    wanted = [n for n in names if n]
    if not wanted:
        return {}
    with session_scope() as session:
        rows = session.execute(
            select(Checkpoint.name, Checkpoint.id).where(Checkpoint.job_id == job_id, Checkpoint.name.in_(wanted))
        ).all()
    return {row.name: row.id for row in rows}


def _result_body(job_id: str, result: TrainingResult) -> dict[str, Any]:
    ids = checkpoint_ids(job_id, [result.best_checkpoint, result.final_checkpoint])
    return {
        "best_checkpoint_id": ids.get(result.best_checkpoint or ""),
        "final_checkpoint_id": ids.get(result.final_checkpoint or ""),
        "metrics": dict(result.metrics),
        "steps": result.steps,
        "epochs": result.epochs,
        "stopped_early": result.status == "early_stopped",
    }


def run_claimed_job(job_id: str, settings: Settings | None = None) -> str | None:
    """Claim and run a job; returns its final status, or None when the message was not ours to run."""
    settings = settings or get_settings()
    claim = claim_job(job_id, new_lease_owner(), settings)
    if claim is None:
        log.info("job %s is not claimable (running elsewhere, finished, cancelled or missing); skipping", job_id)
        return None
    log.info("job %s claimed (attempt %d)", job_id, claim.attempt)
    with session_scope() as session:
        spec_limit = (session.get(Job, job_id).spec or {}).get("max_runtime_seconds")
    limit = runtime_limit(spec_limit if isinstance(spec_limit, int) else None, settings)
    heartbeat = Heartbeat(claim, settings, max_runtime_seconds=limit)
    heartbeat.start()
    try:
        with shutdown.running_job():
            return _run(claim, settings, heartbeat, limit)
    finally:
        heartbeat.stop()
        release_lease(claim)  # a no-op once finish_job cleared it


def _run(claim: Claim, settings: Settings, heartbeat: Heartbeat, limit: int | None) -> str | None:
    from worker.training import run_training

    store = get_store(settings.artifacts)
    reporter = DbReporter(claim.job_id, settings, lease_owner=claim.owner,
                          should_stop=lambda: heartbeat.stop_requested or shutdown.requested(), store=store,
                          upload_checkpoints=store.local_dir(job_prefix(claim.job_id)) is None)
    try:
        config = build_run_config(claim.job_id, settings, store)
        if config.spec.resources.gpus > 1:  # DDP: torchrun, one process per GPU (gloo CPU processes without)
            from worker.ddp_launch import run_distributed

            result = run_distributed(config, reporter, nprocs=config.spec.resources.gpus)
        else:
            result = run_training(config, reporter)
    except Exception as exc:  # every failure ends the job with a readable reason, never a silent loss
        reporter.close()
        error_type, message = describe_failure(exc)
        if not isinstance(exc, TrainingError):
            log.exception("job %s failed", claim.job_id)
        if heartbeat.lease_lost:
            return None
        finish_job(claim, "failed", error_type=error_type, error_message=message, event_type="failed",
                   event_message=f"failed: {message}", level="error", data={"error_type": error_type})
        return "failed"
    reporter.close()
    if heartbeat.lease_lost:
        log.warning("job %s: lease lost to another worker; its outcome is theirs to record", claim.job_id)
        return None
    if result.status == "cancelled" and shutdown.requested() and not heartbeat.stop_requested:
        queue = hand_back(claim, f"the worker shut down at step {result.steps}; resumes from its last checkpoint")
        if queue is not None:
            from worker.celery_app import enqueue_job

            try:
                enqueue_job(claim.job_id, queue, settings)
            except Exception:  # the reaper re-enqueues queued jobs that have no message
                log.warning("could not re-enqueue job %s at shutdown", claim.job_id, exc_info=True)
        return "queued"
    if result.status == "cancelled":
        if heartbeat.timed_out and not heartbeat.cancel_requested:
            message = f"stopped after the maximum runtime of {limit} s (max_runtime_seconds)"
            finish_job(claim, "failed", error_type="timeout", error_message=message, event_type="failed",
                       event_message=f"failed: {message}", level="error",
                       result=_result_body(claim.job_id, result))
            return "failed"
        # the core has reported the "cancelled" event itself
        finish_job(claim, "cancelled", event_type=None, result=_result_body(claim.job_id, result))
        return "cancelled"
    body = _result_body(claim.job_id, result)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.metrics.items()))
    finish_job(claim, "succeeded", result=body, event_type="succeeded",
               event_message=f"succeeded after {result.steps} steps" + (f": {summary}" if summary else ""),
               data={"steps": result.steps, "metrics": dict(result.metrics)})
    return "succeeded"
