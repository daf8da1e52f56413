"""HTTP endpoints of jobs: create, list, read, cancel, delete, metrics, events, checkpoints."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Header, Query, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent

from worker.training.spec import JobSpec

from ..db import session_scope
from ..deps import OwnerDep, SessionDep, SettingsDep, StoreDep, idempotency_key_header
from ..errors import NotFound, Unprocessable
from ..pagination import decode_cursor, encode_cursor
from ..storage import job_prefix
from . import repository as repo
from . import service
from .archive import open_checkpoint_archive
from .models import ACTIVE_STATUSES, Job
from .schemas import CheckpointRead, ErrorBody, EventRead, JobPage, JobRead, JobStatus, MetricSeries, finite

router = APIRouter(prefix="/jobs", tags=["jobs"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, invalid or revoked API key"},
    404: {"model": ErrorBody, "description": "no such job for this owner"},
    503: {"model": ErrorBody, "description": "database or artifact store unavailable"},
}
CONFLICT = {409: {"model": ErrorBody, "description": "the job's state does not allow this"}}
EVENTS_POLL_SECONDS = 0.5
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_.:/\-]{1,100}$")


def _example() -> dict[str, Any]:
    return JobSpec.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobRead,
    responses={
        **ERRORS,
        200: {"model": JobRead, "description": "replay: this Idempotency-Key already created this job"},
        409: {"model": ErrorBody, "description": "Idempotency-Key reused with a different spec"},
        429: {"model": ErrorBody, "description": "too many active jobs for this owner"},
    },
)
def create_job(
    spec: Annotated[JobSpec, Body(openapi_examples={"digits-mlp": {"summary": "a small MLP on digits", "value": _example()}})],
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: Annotated[str | None, idempotency_key_header("job")] = None,
) -> JobRead:
    job, created = service.create_job(session, settings, owner, spec, idempotency_key)
    session.commit()  # enqueue only after the row is visible to workers
    if created:
        service.enqueue(session, settings, job)
    else:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobRead.from_row(job)


@router.get("", response_model=JobPage, responses=ERRORS)
def list_jobs(
    session: SessionDep,
    owner: OwnerDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> JobPage:
    after = decode_cursor(cursor) if cursor else None
    jobs = repo.list_jobs(session, owner, status=status, limit=limit + 1, after=after)
    page, more = jobs[:limit], len(jobs) > limit
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more else None
    return JobPage(items=[JobRead.from_row(j) for j in page], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobRead, responses=ERRORS)
def get_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobRead:
    return JobRead.from_row(service.get_job(session, owner, job_id))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**ERRORS, **CONFLICT})
def delete_job(job_id: str, session: SessionDep, owner: OwnerDep, store: StoreDep) -> Response:
    """Delete a queued or finished job with its events, metrics, checkpoints and files (409 while running)."""
    deleted = service.delete_job(session, owner, job_id)
    session.commit()  # rows first: a failed commit must not leave rows pointing at deleted files
    store.delete_prefix(job_prefix(deleted))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{job_id}/cancel", response_model=JobRead, responses={**ERRORS, **CONFLICT})
def cancel_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobRead:
    """A queued job is cancelled at once; a running one stops at its next step (cancel_requested)."""
    return JobRead.from_row(service.cancel_job(session, owner, job_id))


@router.get("/{job_id}/metrics", response_model=MetricSeries, responses=ERRORS)
def get_metrics(
    job_id: str,
    session: SessionDep,
    owner: OwnerDep,
    names: Annotated[str | None, Query(max_length=2000, description="comma-separated metric names; all when absent")] = None,
    max_points: Annotated[int, Query(ge=2, le=100_000, description="downsample each series to at most this many")] = 1000,
) -> MetricSeries:
    job = service.get_job(session, owner, job_id)
    wanted = None
    if names is not None:
        wanted = list(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
        bad = [n for n in wanted if not _METRIC_NAME.match(n)]
        if bad or len(wanted) > 100:
            raise Unprocessable(["query", "names"], "up to 100 comma-separated names of letters, digits and _.:/-")
    series = service.metric_series(session, job, wanted, max_points)
    return MetricSeries(series={name: [(s, finite(v)) for s, v in pts] for name, pts in series.items()})


@router.get("/{job_id}/events", response_model=list[EventRead], responses=ERRORS)
def list_events(
    job_id: str,
    session: SessionDep,
    owner: OwnerDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="only events with a larger id (for polling)")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventRead]:
    job = service.get_job(session, owner, job_id)
    return [EventRead.from_row(e) for e in repo.list_events(session, job.id, after=after, limit=limit)]


@router.get(
    "/{job_id}/events/stream",
    response_class=EventSourceResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "events as Server-Sent Events"}},
)
def stream_events(
    job_id: str,
    session: SessionDep,
    owner: OwnerDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=2**62)] = None,
) -> EventSourceResponse:
    """Follow the job's events as they happen; the stream ends once the job has finished."""
    job = service.get_job(session, owner, job_id)
    url, start = settings.database_url, max(after, last_event_id or 0)

    def poll(last: int) -> tuple[list[EventRead], str | None]:
        with session_scope(url) as s:
            events = [EventRead.from_row(e) for e in repo.list_events(s, job.id, after=last, limit=500)]
            return events, s.scalar(select(Job.status).where(Job.id == job.id))

    async def follow() -> AsyncIterator[ServerSentEvent]:
        last = start
        while True:
            events, job_status = await anyio.to_thread.run_sync(poll, last)
            for event in events:
                yield ServerSentEvent(event.model_dump_json(), event=event.type, id=str(event.id))
                last = event.id
            if not events and job_status not in ACTIVE_STATUSES:
                return  # finished (or deleted) and drained
            if not events:
                await anyio.sleep(EVENTS_POLL_SECONDS)

    return EventSourceResponse(follow(), ping=15)


@router.get("/{job_id}/checkpoints", response_model=list[CheckpointRead], responses=ERRORS)
def list_checkpoints(job_id: str, session: SessionDep, owner: OwnerDep) -> list[CheckpointRead]:
    job = service.get_job(session, owner, job_id)
    return [CheckpointRead.from_row(c) for c in repo.list_checkpoints(session, job.id)]


@router.get(
    "/{job_id}/checkpoints/{checkpoint_id}/download",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
            "description": "a tar archive of the checkpoint's files and spec.json, streamed",
        },
    },
)
def download_checkpoint(
    job_id: str, checkpoint_id: str, session: SessionDep, owner: OwnerDep, store: StoreDep
) -> StreamingResponse:
    """The checkpoint (an id, `best` or `last`) as one tar archive, streamed from the artifact store."""
    job = service.get_job(session, owner, job_id)
    checkpoint = service.checkpoint_of(session, job, checkpoint_id)
    archive = open_checkpoint_archive(store, job, checkpoint)
    if archive is None:
        raise NotFound(f"the files of checkpoint {checkpoint.id} are no longer in the artifact store")
    headers = {
        "Content-Disposition": f'attachment; filename="{archive.filename}"',
        "Content-Length": str(archive.content_length),
    }
    return StreamingResponse(archive.stream(), media_type="application/x-tar", headers=headers)
