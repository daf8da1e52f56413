"""API keys: create, list, revoke, authenticate. The CLI (`finetune keys ...`) and the API call these.

A secret is 32 random bytes (url-safe base64) behind a `ft_` marker; only its sha256 is stored, so a
leaked database does not leak keys. Since the secret is high-entropy, a plain (unsalted) hash is enough,
and looking the hash up by a unique index leaks nothing about the secret through timing.
Services flush; the caller's unit of work commits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..db import utcnow
from ..errors import Conflict, NotFound, Unprocessable
from .models import ApiKey

SECRET_MARKER = "ft_"
PREFIX_LENGTH = 11  # "ft_" + 8 characters: enough to tell keys apart in a listing
MAX_SECRET_LENGTH = 200
# last_used_at is informational: refresh it at most this often so reads do not all turn into writes.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(session: Session, name: str, owner: str | None = None) -> tuple[ApiKey, str]:
    """A new key acting for `owner` (default: the name). Returns the row and the secret (shown once)."""
    name = name.strip()
    owner = (owner if owner is not None else name).strip()
    for field, value in (("name", name), ("owner", owner)):
        if not value or len(value) > 200:
            raise Unprocessable([field], f"{field} must be 1 to 200 characters")
    secret = SECRET_MARKER + secrets.token_urlsafe(32)
    key = ApiKey(name=name, owner=owner, prefix=secret[:PREFIX_LENGTH], key_hash=hash_secret(secret))
    session.add(key)
    session.flush()
    return key, secret


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(session: Session, id_or_prefix: str) -> ApiKey:
    """Revoke by id or by the displayed prefix; revoking twice keeps the first revocation time."""
    matches = list(
        session.scalars(select(ApiKey).where(or_(ApiKey.id == id_or_prefix, ApiKey.prefix == id_or_prefix)))
    )
    if not matches:
        raise NotFound(f"no API key with id or prefix {id_or_prefix!r}")
    if len(matches) > 1:
        raise Conflict(f"prefix {id_or_prefix!r} matches {len(matches)} keys; revoke by id")
    key = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def any_active_key(session: Session) -> bool:
    """With no active key the API is open (single-user mode); one key switches authentication on."""
    return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """The active key with this secret, or None."""
    if not secret or len(secret) > MAX_SECRET_LENGTH:
        return None
    digest = hash_secret(secret)
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)))
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now  # flushed with the request's unit of work
    return key
