"""What the jobs API returns. The request body of POST /jobs is the JobSpec itself (worker.training.spec)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from .models import Checkpoint, Job, JobEvent

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def finite(value: Any) -> float | None:
    """JSON has no NaN or infinity; a diverged loss is reported as null rather than breaking the response."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """A stored JSON value with non-finite floats replaced by null (events' data come from the worker)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def finite_map(values: dict[str, Any] | None) -> dict[str, float | None]:
    return {str(k): finite(v) for k, v in (values or {}).items()}


class ErrorBody(BaseModel):
    detail: Any = Field(description="what went wrong: a message, or a list of {loc, msg, type}")


class JobProgress(BaseModel):
    step: int
    total_steps: int | None
    epoch: float


class JobError(BaseModel):
    type: str
    message: str


class JobResult(BaseModel):
    best_checkpoint_id: str | None = None
    final_checkpoint_id: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)


class JobRead(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    queue: str
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    progress: JobProgress
    latest_metrics: dict[str, float | None]
    error: JobError | None
    result: JobResult | None
    base_job_id: str | None = Field(description="the job this one was fine-tuned from (model.from_job)")
    base_checkpoint_id: str | None = Field(description="the checkpoint of base_job_id it started from")

    @classmethod
    def from_row(cls, job: Job) -> JobRead:
        error = None
        if job.error_type or job.error_message:
            error = JobError(type=job.error_type or "Error", message=job.error_message or "")
        result = None
        if isinstance(job.result, dict):
            result = JobResult(
                best_checkpoint_id=job.result.get("best_checkpoint_id"),
                final_checkpoint_id=job.result.get("final_checkpoint_id"),
                metrics=finite_map(job.result.get("metrics")),
            )
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,  # type: ignore[arg-type]
            queue=job.queue,
            spec=json_safe(job.spec),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            cancel_requested=job.cancel_requested,
            progress=JobProgress(step=job.progress_step, total_steps=job.progress_total_steps, epoch=job.progress_epoch),
            latest_metrics=finite_map(job.latest_metrics),
            error=error,
            result=result,
            base_job_id=job.base_job_id,
            base_checkpoint_id=job.base_checkpoint_id,
        )


class JobPage(BaseModel):
    items: list[JobRead]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


# A [step, value] pair. Documented as a two-item array of numbers rather than with prefixItems: OpenAPI
# tooling that converts 3.1 schemas for older validators (schemathesis among them) mangles prefixItems.
MetricPair = Annotated[
    tuple[int, float | None],
    WithJsonSchema({"type": "array", "minItems": 2, "maxItems": 2,
                    "items": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                    "description": "[step (an integer), value (null when not finite)]"}),
]


class MetricSeries(BaseModel):
    series: dict[str, list[MetricPair]] = Field(
        description="per metric name, [step, value] pairs in step order (null for a non-finite value)"
    )


class EventRead(BaseModel):
    id: int
    created_at: datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, event: JobEvent) -> EventRead:
        return cls(
            id=event.id,
            created_at=event.created_at,
            level=event.level,
            type=event.type,
            message=event.message,
            data=json_safe(event.data),
        )


class CheckpointRead(BaseModel):
    id: str
    name: str
    step: int
    epoch: float
    metrics: dict[str, float | None]
    size_bytes: int
    sha256: str
    created_at: datetime
    is_best: bool
    is_final: bool

    @classmethod
    def from_row(cls, ckpt: Checkpoint) -> CheckpointRead:
        return cls(
            id=ckpt.id,
            name=ckpt.name,
            step=ckpt.step,
            epoch=ckpt.epoch,
            metrics=finite_map(ckpt.metrics),
            size_bytes=ckpt.size_bytes,
            sha256=ckpt.sha256,
            created_at=ckpt.created_at,
            is_best=ckpt.is_best,
            is_final=ckpt.is_final,
        )
