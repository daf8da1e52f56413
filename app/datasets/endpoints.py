"""HTTP endpoints of uploaded datasets (POST/GET/DELETE /datasets).

The upload is parsed from the request stream here rather than by a `File()` parameter, so its size is
capped while it arrives (Content-Length up front, then a running count for chunked bodies): a huge body
is refused before it fills the disk, and the file is spooled to a temporary file, never held in memory.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..deps import OwnerDep, SessionDep, SettingsDep, StoreDep, idempotency_key_header
from ..errors import PayloadTooLarge, Unprocessable
from . import service
from .schemas import DatasetPage, DatasetRead

router = APIRouter(prefix="/datasets", tags=["datasets"])

# Room for the multipart envelope (boundaries, part headers, small form fields) around the file itself;
# the file's own size is then enforced exactly by the store.
ENVELOPE_BYTES = 64 * 1024


ERROR = {"content": {"application/json": {"schema": {"type": "object", "properties": {"detail": {}}}}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**ERROR, "description": "missing, invalid or revoked API key"},
    404: {**ERROR, "description": "no such dataset for this owner"},
    503: {**ERROR, "description": "database or artifact store unavailable"},
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "a .jsonl or .csv file"},
                        "format": {
                            "type": "string",
                            "enum": ["jsonl", "csv"],
                            "description": "overrides the format the filename's extension implies",
                        },
                    },
                }
            }
        },
    }
}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the file is larger than the upload limit of {limit} bytes (FINETUNE_MAX_UPLOAD_BYTES)")


async def _capped(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit + ENVELOPE_BYTES:
            raise _too_large(limit)
        yield chunk


async def _parse_upload(request: Request, limit: int) -> tuple[UploadFile, str | None, list[UploadFile]]:
    """The `file` part and the optional `format` field; also every file part, to close them afterwards."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + ENVELOPE_BYTES:
        raise _too_large(limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise Unprocessable(
            ["body", "file"], "send the dataset as multipart/form-data with a file field named 'file'", "missing"
        )
    try:
        form = await MultiPartParser(request.headers, _capped(request, limit), max_files=1, max_fields=5).parse()
    except MultiPartException as exc:
        raise Unprocessable(["body"], f"malformed multipart body: {exc.message}", "multipart_invalid") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        for f in files:
            await f.close()
        raise Unprocessable(["body", "file"], "a file field named 'file' is required", "missing")
    declared = form.get("format")
    return upload, declared if isinstance(declared, str) else None, files


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetRead,
    openapi_extra=UPLOAD_BODY,
    responses={
        **ERRORS,
        200: {"model": DatasetRead, "description": "replay: this Idempotency-Key already created this dataset"},
        413: {**ERROR, "description": "the file is larger than FINETUNE_MAX_UPLOAD_BYTES"},
        422: {**ERROR, "description": "not a .jsonl/.csv file, or a file that fails validation (names the line)"},
    },
)
async def upload_dataset(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    owner: OwnerDep,
    idempotency_key: Annotated[str | None, idempotency_key_header("dataset")] = None,
) -> DatasetRead:
    """Upload a `.jsonl` or `.csv` dataset; it is validated before anything is kept."""
    limit = settings.max_upload_bytes
    upload, declared, files = await _parse_upload(request, limit)
    try:
        await upload.seek(0)
        dataset, created = await run_in_threadpool(
            service.create_dataset,
            session,
            store,
            upload.file,
            owner=owner,
            filename=upload.filename,
            content_type=upload.content_type,
            declared_format=declared,
            idempotency_key=idempotency_key,
            max_bytes=limit,
        )
    finally:
        for f in files:
            await f.close()
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/datasets/{dataset.id}"
    return DatasetRead.model_validate(dataset)


@router.get("", response_model=DatasetPage, responses=ERRORS)
def list_datasets(
    session: SessionDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> DatasetPage:
    """The owner's datasets, newest first."""
    items, next_cursor = service.list_datasets(session, owner, limit=limit, cursor=cursor)
    return DatasetPage(items=[DatasetRead.model_validate(d) for d in items], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetRead, responses=ERRORS)
def get_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep) -> DatasetRead:
    return DatasetRead.model_validate(service.get_dataset(session, dataset_id, owner))


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ERRORS, 409: {**ERROR, "description": "a queued or running job uses the dataset"}},
)
def delete_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep, store: StoreDep) -> Response:
    """Delete a dataset and its file (409 while a queued or running job reads it)."""
    prefix = service.delete_dataset(session, dataset_id, owner)
    session.commit()  # the row first: a failed commit must not leave a row whose file is gone
    store.delete_prefix(prefix)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
