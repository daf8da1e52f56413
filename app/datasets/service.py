"""The rules of uploaded datasets: format, storage, validation, idempotency, ownership, deletion.

An upload streams to the artifact store (bytes and sha256 computed on the way), is validated by reading
the stored file back once, and only then gets a row. A refused file leaves nothing behind. The user's
filename is sanitised and only ever displayed; the storage key is derived from the new id.
Services flush; the request's unit of work commits.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from typing import BinaryIO

from sqlalchemy.orm import Session

from worker.training.dataset_files import DatasetFileError, DatasetSummary, check_fields, inspect_file
from worker.training.spec import JobSpec

from ..errors import Conflict, NotFound, PayloadTooLarge, ServiceUnavailable, Unprocessable
from ..pagination import decode_cursor, encode_cursor
from ..storage import ArtifactStore, StorageError, TooLarge, check_key, dataset_key
from . import repository
from .models import Dataset

log = logging.getLogger(__name__)

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CONTENT_TYPES = {
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-ndjson": "jsonl",
    "application/ndjson": "jsonl",
    "text/csv": "csv",
    "application/csv": "csv",
}
MAX_FILENAME = 200
MAX_IDEMPOTENCY_KEY = 200
FILE_LOC: list[str | int] = ["body", "file"]


# --- upload ---------------------------------------------------------------------------------------


def sanitize_filename(name: str | None, fmt: str) -> str:
    """A display name: the basename only, letters/digits/._- and spaces, at most MAX_FILENAME characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c if c.isalnum() or c in "._- " else "_" for c in name)
    name = re.sub(r"_{2,}", "_", name).strip(" ._")
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 10 else ""
        name = stem[: MAX_FILENAME - len(ext) - 1] + "." + ext if ext else name[:MAX_FILENAME]
    return name or f"dataset.{fmt}"


def detect_format(filename: str | None, content_type: str | None, declared: str | None = None) -> str:
    """jsonl or csv: the declared form field wins, then the filename's extension, then the content type."""
    if declared:
        declared = declared.strip().lower()
        if declared not in ("jsonl", "csv"):
            raise Unprocessable(["body", "format"], f"unknown format {declared[:40]!r}; expected jsonl or csv")
        return declared
    suffix = ""
    if filename and "." in filename:
        suffix = "." + filename.rsplit(".", 1)[-1].strip().lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in CONTENT_TYPES:
        return CONTENT_TYPES[media]
    hint = " (a .json file must be JSON Lines, one object per line: rename it .jsonl)" if suffix == ".json" else ""
    raise Unprocessable(
        FILE_LOC,
        f"unsupported file type {suffix[:20] or media[:60] or 'unknown'!r}: upload a .jsonl or .csv file"
        f" (or send the form field format=jsonl|csv){hint}",
        "unsupported_format",
    )


def _check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise Unprocessable(
            ["header", "Idempotency-Key"], f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        )
    return key


def _prefix(dataset_id: str) -> str:
    return check_key(f"datasets/{dataset_id}")


def create_dataset(
    session: Session,
    store: ArtifactStore,
    stream: BinaryIO,
    *,
    owner: str | None,
    filename: str | None,
    content_type: str | None = None,
    declared_format: str | None = None,
    idempotency_key: str | None = None,
    max_bytes: int | None = None,
) -> tuple[Dataset, bool]:
    """Store, validate and record an upload. Returns (dataset, created); created is False for a replay."""
    fmt = detect_format(filename, content_type, declared_format)
    idempotency_key = _check_idempotency_key(idempotency_key)
    if idempotency_key is not None:
        existing = repository.get_by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            return existing, False

    dataset_id = str(uuid.uuid4())
    key = dataset_key(dataset_id, fmt)
    try:
        try:
            size, sha256 = store.write_stream(key, stream, max_bytes=max_bytes)
        except TooLarge as exc:
            raise PayloadTooLarge(
                f"the file is larger than the upload limit of {exc.limit} bytes (FINETUNE_MAX_UPLOAD_BYTES)"
            ) from None
        except StorageError as exc:
            log.error("cannot store dataset upload %s: %s", dataset_id, exc)
            raise ServiceUnavailable("the artifact store cannot take the upload right now; try again") from None
        try:
            with store.open(key) as stored:
                summary = inspect_file(stored, fmt)
        except DatasetFileError as exc:
            raise Unprocessable(FILE_LOC, str(exc), "dataset_invalid") from None
        dataset = Dataset(
            id=dataset_id,
            owner=owner,
            filename=sanitize_filename(filename, fmt),
            format=fmt,
            kind=summary.kind,
            rows=summary.rows,
            columns=summary.columns,
            column_types=summary.column_types,
            label_counts=summary.label_counts,
            samples=summary.samples,
            bytes=size,
            sha256=sha256,
            storage_key=key,
            idempotency_key=idempotency_key,
        )
        if repository.add(session, dataset):
            return dataset, True
    except BaseException:
        store.delete_prefix(_prefix(dataset_id))
        raise
    # A concurrent request with the same key won the race: answer with its dataset, keep nothing of ours.
    store.delete_prefix(_prefix(dataset_id))
    existing = repository.get_by_idempotency_key(session, owner, idempotency_key or "")
    if existing is None:  # the winner rolled back after all
        raise Conflict("a concurrent upload with the same Idempotency-Key failed; retry")
    return existing, False


# --- read, list, delete ---------------------------------------------------------------------------


def get_for_owner(session: Session, dataset_id: str, owner: str | None, *, lock: bool = False) -> Dataset | None:
    """The owner's dataset or None. lock=True takes a shared row lock (PostgreSQL) for the transaction, so
    a dataset a job is being created from cannot be deleted concurrently."""
    return repository.get(session, dataset_id.lower(), owner, shared=lock)


def get_dataset(session: Session, dataset_id: str, owner: str | None) -> Dataset:
    dataset = get_for_owner(session, dataset_id, owner)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id[:64]!r}")
    return dataset


def list_datasets(
    session: Session, owner: str | None, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[Dataset], str | None]:
    after = decode_cursor(cursor) if cursor else None
    rows = repository.list_page(session, owner, limit + 1, after)
    items = rows[:limit]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return items, next_cursor


def delete_dataset(session: Session, dataset_id: str, owner: str | None) -> str:
    """Delete the row (409 while a queued or running job reads it); returns the storage prefix to delete
    once the deletion has committed, so a failed commit never leaves a row without its file."""
    dataset = repository.get(session, dataset_id.lower(), owner, lock=True)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id[:64]!r}")
    jobs = repository.active_jobs_using(session, dataset.id)
    if jobs:
        raise Conflict(
            f"dataset {dataset.id} is used by active job(s) {', '.join(jobs)}; "
            "cancel them or wait until they finish"
        )
    repository.delete(session, dataset)
    return _prefix(dataset.id)


# --- fitting a dataset to a job -------------------------------------------------------------------


def summary_of(dataset: Dataset) -> DatasetSummary:
    return DatasetSummary(
        format=dataset.format,
        rows=dataset.rows,
        columns=list(dataset.columns),
        kind=dataset.kind or "custom",
        label_counts=dataset.label_counts,
        samples=list(dataset.samples),
        column_types=dict(dataset.column_types or {}),
    )


def dataset_fit_error(dataset: Dataset, task: str, text_field: str, label_field: str) -> DatasetFileError | None:
    """Why a dataset cannot serve a task with this field mapping (message and spec field), or None."""
    try:
        check_fields(summary_of(dataset), task, text_field, label_field)
    except DatasetFileError as exc:
        return exc
    return None


def check_job_datasets(session: Session, spec: JobSpec, owner: str | None, *, lock: bool = True) -> list[Dataset]:
    """The uploaded datasets a job spec reads, each checked against its task and field mapping.

    Raises Unprocessable naming the spec field: an unknown (or another owner's) dataset id, or a dataset
    that does not fit (no label column, one class only, text where numbers are needed...).
    """
    datasets: list[Dataset] = []
    for field in ("train", "validation"):
        ref = getattr(spec.data, field)
        if not ref or ref.startswith("builtin:"):
            continue
        dataset = get_for_owner(session, ref, owner, lock=lock)
        if dataset is None:
            raise Unprocessable(["body", "data", field], f"no uploaded dataset with id {ref}")
        error = dataset_fit_error(dataset, spec.task, spec.data.text_field, spec.data.label_field)
        if error is not None:
            loc: list[str | int] = ["body", *(error.field or f"data.{field}").split(".")]
            raise Unprocessable(loc, f"data.{field} ({dataset.filename}): {error.message}")
        datasets.append(dataset)
    return datasets
