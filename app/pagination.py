"""Opaque keyset cursors: a page ends at (created_at, id); the next page starts strictly after it.

The cursor is url-safe base64 of a small JSON array, so clients treat it as a token; a tampered or
truncated cursor is a 422 naming `cursor`, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timezone

from .errors import Unprocessable

_ID = re.compile(r"^[0-9a-fA-F-]{1,36}$")


def encode_cursor(created_at: datetime, id: str) -> str:
    raw = json.dumps([created_at.astimezone(timezone.utc).isoformat(), id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        if len(cursor) > 200:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not isinstance(id, str) or not _ID.match(id):
            raise ValueError("bad cursor fields")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise Unprocessable(["query", "cursor"], "invalid cursor; pass next_cursor from a previous page") from exc
    return when.astimezone(timezone.utc), id
