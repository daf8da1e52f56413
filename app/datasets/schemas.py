"""Request and response shapes of /datasets."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DatasetFormat = Literal["jsonl", "csv"]


class DatasetRead(BaseModel):
    """An uploaded dataset: what was stored, and what validation found in it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    filename: str = Field(description="the uploaded file's name, sanitised; for display only")
    format: DatasetFormat
    kind: str | None = Field(
        description="text_label, text_target, tabular, prompt_completion, chat, text or custom"
    )
    rows: int
    columns: list[str]
    column_types: dict[str, str] | None = Field(
        default=None, description="column -> string, integer, number, boolean, null, vector, array or object"
    )
    label_counts: dict[str, int] | None = Field(
        description="rows per value of the 'label' column, when it holds classes"
    )
    samples: list[dict[str, Any]] = Field(description="the first rows, long values truncated")
    bytes: int
    sha256: str
    created_at: datetime


class DatasetPage(BaseModel):
    items: list[DatasetRead]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")
