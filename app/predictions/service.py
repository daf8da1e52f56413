"""The rules of predictions: which job and checkpoint, which inputs fit the model, and the queue.

A prediction is a row (the request and, once a worker ran it, the outputs); the API creates it, commits,
and sends its id to the `predict` queue (Settings.predict_queue), which a dedicated worker consumes (started
by `finetune serve`, the `predictor` service in compose), so a prediction never waits behind a training run.
The API process never loads a model: torch lives in workers only.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.training.spec import BuiltinCnn, BuiltinMlp, FromJobModel, JobSpec

from ..errors import Conflict, NotFound, Unprocessable
from ..jobs import repository as jobs_repo
from ..jobs.models import Checkpoint, Job
from ..jobs.service import get_job
from ..settings import Settings
from .models import PENDING_STATUSES, Prediction
from .schemas import PredictRequest

log = logging.getLogger(__name__)
PREDICT_TASK = "finetune.predict"
MAX_LINEAGE = 20


def _input_kind(session: Session, job: Job) -> str | None:
    """"vector" (mlp, cnn), "text" (transformer, Hugging Face), or None when the lineage is unreadable."""
    for _ in range(MAX_LINEAGE):
        try:
            model = JobSpec.model_validate(job.spec).model
        except ValueError:
            return None
        if isinstance(model, (BuiltinMlp, BuiltinCnn)):
            return "vector"
        if not isinstance(model, FromJobModel):
            return "text"
        base = session.get(Job, job.base_job_id) if job.base_job_id else None
        if base is None:
            return None
        job = base
    return None


def _check_inputs(kind: str | None, inputs: list[Any]) -> None:
    for i, value in enumerate(inputs):
        if kind == "text" and not isinstance(value, str):
            raise Unprocessable(["body", "inputs", i], "this job's model takes text: expected a string")
        if kind == "vector" and isinstance(value, str):
            raise Unprocessable(["body", "inputs", i], "this job's model takes numbers: expected a list of numbers "
                                "or an object of feature name -> number")


def create_prediction(session: Session, owner: str | None, job_id: str, request: PredictRequest) -> Prediction:
    """A queued prediction for a succeeded job's checkpoint (404 unknown job or checkpoint, 409 job not
    succeeded, 422 inputs of the wrong kind). Flushes only; the caller commits, then enqueues."""
    job = get_job(session, owner, job_id)
    if job.status != "succeeded":
        raise Conflict(f"job {job.id} is {job.status}; predictions need a succeeded job")
    checkpoint = jobs_repo.resolve_checkpoint(session, job, request.checkpoint)
    if checkpoint is None:
        raise NotFound(f"job {job.id} has no checkpoint {request.checkpoint!r}")
    _check_inputs(_input_kind(session, job), request.inputs)
    row = Prediction(job_id=job.id, owner=owner, checkpoint_id=checkpoint.id, status="queued", inputs=request.inputs,
                     parameters={"max_new_tokens": request.max_new_tokens, "temperature": request.temperature})
    session.add(row)
    session.flush()
    return row


def enqueue(session: Session, settings: Settings, prediction: Prediction) -> None:
    """Send the committed prediction to the predict queue; a broker outage fails it with a clear message."""
    try:
        from worker.celery_app import get_celery_app  # lazy: keeps Celery out of import time

        get_celery_app(settings).send_task(PREDICT_TASK, args=[prediction.id], queue=settings.predict_queue,
                                           task_id=f"predict-{prediction.id}")
    except Exception as exc:  # the broker's errors are many and library-specific
        log.warning("could not enqueue prediction %s: %s", prediction.id, exc)
        fail(session, prediction.id, "broker_unavailable",
             f"the broker could not be reached ({type(exc).__name__}); try again")


def fail(session: Session, prediction_id: str, error_type: str, message: str) -> None:
    from ..db import utcnow

    session.execute(update(Prediction).where(Prediction.id == prediction_id).values(
        status="failed", error_type=error_type, error=message, finished_at=utcnow()))


def get_prediction(session: Session, owner: str | None, job_id: str, prediction_id: str,
                   timeout_seconds: float | None = None) -> Prediction:
    """A prediction of the owner's job. One still pending after `timeout_seconds` is failed: its predictor died
    or none consumes the predict queue, and a client must not poll a 202 forever."""
    job = get_job(session, owner, job_id)
    pid = jobs_repo.normalize_id(prediction_id)
    row = session.scalar(select(Prediction).where(Prediction.id == pid, Prediction.job_id == job.id)) if pid else None
    if row is None:
        raise NotFound(f"job {job.id} has no prediction {prediction_id}")
    if timeout_seconds is not None and row.status in PENDING_STATUSES:
        from ..db import utcnow

        if (utcnow() - row.created_at).total_seconds() > timeout_seconds:
            session.execute(update(Prediction).where(Prediction.id == row.id, Prediction.status.in_(PENDING_STATUSES))
                            .values(status="failed", error_type="timed_out", finished_at=utcnow(), error=(
                                f"no predictor answered within {int(timeout_seconds)} s; check that a worker "
                                "consumes the predict queue, then try again")))
            session.commit()
            session.refresh(row)
    return row


def checkpoint_of(session: Session, prediction: Prediction) -> Checkpoint | None:
    return session.get(Checkpoint, prediction.checkpoint_id)
