"""HTTP endpoints of predictions: POST /jobs/{id}/predict (waits for the answer) and polling a prediction."""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Response, status

from ..db import session_scope
from ..deps import OwnerDep, SettingsDep
from ..errors import ServiceUnavailable, Unprocessable
from ..jobs.schemas import ErrorBody
from ..settings import Settings
from . import service
from .models import PENDING_STATUSES
from .schemas import PredictionRead, PredictRequest

router = APIRouter(prefix="/jobs", tags=["predictions"])

MAX_WAIT_SECONDS = 60.0
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, invalid or revoked API key"},
    404: {"model": ErrorBody, "description": "no such job, checkpoint or prediction for this owner"},
    503: {"model": ErrorBody, "description": "database or broker unavailable, or the prediction failed on the worker"},
}


def _create(settings: Settings, owner: str | None, job_id: str, request: PredictRequest) -> PredictionRead:
    with session_scope(settings.database_url) as session:
        row = service.create_prediction(session, owner, job_id, request)
        session.commit()  # enqueue only after the row is visible to workers
        service.enqueue(session, settings, row)
        session.commit()
        session.refresh(row)
        return PredictionRead.from_row(row)


def _read(settings: Settings, owner: str | None, job_id: str, prediction_id: str) -> PredictionRead:
    with session_scope(settings.database_url) as session:
        return PredictionRead.from_row(service.get_prediction(session, owner, job_id, prediction_id,
                                                              settings.prediction_timeout_seconds))


def _respond(prediction: PredictionRead, response: Response, raise_failure: bool = True) -> PredictionRead:
    if prediction.status in PENDING_STATUSES:
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Location"] = f"/jobs/{prediction.job_id}/predictions/{prediction.id}"
        return prediction
    if raise_failure and prediction.status == "failed" and prediction.error is not None:
        if prediction.error.type == "invalid_input":
            raise Unprocessable(["body", "inputs"], prediction.error.message)
        raise ServiceUnavailable(f"prediction {prediction.id} failed: {prediction.error.message}")
    return prediction


@router.post(
    "/{job_id}/predict",
    response_model=PredictionRead,
    responses={
        **ERRORS,
        202: {"model": PredictionRead, "description": "not answered within `wait` seconds: poll Location"},
        409: {"model": ErrorBody, "description": "the job has not succeeded"},
        422: {"model": ErrorBody, "description": "inputs that do not fit the model"},
    },
)
async def predict(
    job_id: str,
    request: PredictRequest,
    response: Response,
    settings: SettingsDep,
    owner: OwnerDep,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for the answer")] = MAX_WAIT_SECONDS,
) -> PredictionRead:
    """Run the job's `best` (or `last`, or a named) checkpoint on up to 64 inputs, on a worker.

    Answers with the outputs when they are ready within `wait` seconds; otherwise 202 with the prediction,
    to poll at `GET /jobs/{id}/predictions/{prediction_id}`."""
    prediction = await anyio.to_thread.run_sync(_create, settings, owner, job_id, request)
    deadline, pause = time.monotonic() + wait, 0.05
    while prediction.status in PENDING_STATUSES and time.monotonic() < deadline:
        await anyio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.5)
        prediction = await anyio.to_thread.run_sync(_read, settings, owner, job_id, prediction.id)
    return _respond(prediction, response)


@router.get(
    "/{job_id}/predictions/{prediction_id}",
    response_model=PredictionRead,
    responses={**ERRORS, 202: {"model": PredictionRead, "description": "still queued or running"}},
)
async def get_prediction(job_id: str, prediction_id: str, response: Response, settings: SettingsDep,
                         owner: OwnerDep) -> PredictionRead:
    """A prediction: 202 while queued or running; 200 when answered (status succeeded, or failed with error)."""
    prediction = await anyio.to_thread.run_sync(_read, settings, owner, job_id, prediction_id)
    return _respond(prediction, response, raise_failure=False)
