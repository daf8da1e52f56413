"""SQL row of an uploaded dataset; the file itself lives in the artifact store."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, UTCDateTime, utcnow


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    owner: Mapped[str | None] = mapped_column(String(200), index=True)
    filename: Mapped[str] = mapped_column(String(255))  # sanitised; never used as a path
    format: Mapped[str] = mapped_column(String(16))  # jsonl | csv
    kind: Mapped[str | None] = mapped_column(String(32))  # text_label, text_target, tabular, prompt_completion, chat, text, custom
    rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    label_counts: Mapped[dict[str, int] | None] = mapped_column(JSON)
    samples: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # column -> value type (string, integer, number, vector...), so a job's field mapping is checked at submit
    column_types: Mapped[dict[str, str] | None] = mapped_column(JSON)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(500))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_datasets_owner_idempotency_key"),
        # NULLs are distinct in a unique constraint, so open mode (owner NULL) needs its own index to make
        # a racing replay of the same Idempotency-Key fail instead of creating a second dataset.
        Index(
            "uq_datasets_open_idempotency_key",
            "idempotency_key",
            unique=True,
            sqlite_where=text("owner IS NULL"),
            postgresql_where=text("owner IS NULL"),
        ),
    )
