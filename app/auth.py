"""API-key authentication and owner scoping.

- No active key in the database: the API is open (single-user mode) and the owner is None.
- Any active key: every route but /health, /ready and the docs needs `Authorization: Bearer <key>`;
  the key's owner owns what it creates and sees only that. Another owner's resource is a 404, never a
  403, so ids do not leak. A presented key must be valid even in open mode: a client that believes it is
  authenticated is told it is not, rather than silently acting as nobody.
"""

from __future__ import annotations

from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute, Session

from .errors import Unauthorized
from .keys.service import any_active_key, authenticate


def resolve_owner(session: Session, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is not None and credentials.credentials:
        key = authenticate(session, credentials.credentials)
        if key is None:
            raise Unauthorized("invalid or revoked API key")
        return key.owner
    if any_active_key(session):
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    return None


def owned_by(column: InstrumentedAttribute[str | None], owner: str | None) -> ColumnElement[bool]:
    """The filter for one owner's rows; open mode (owner None) sees the rows created in open mode."""
    return column.is_(None) if owner is None else column == owner
