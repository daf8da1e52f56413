"""The artifact store: datasets and checkpoints, addressed by keys derived from ids.

A key is a relative POSIX path such as `datasets/<id>/data.jsonl` or `jobs/<id>/checkpoints/step-00000010/model.safetensors`.
Keys are built by the service from ids, never from user input, and every key is still checked and
resolved under the store's root, so no request can reach outside it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*$")
CHUNK = 1 << 20


class StorageError(Exception):
    """The store cannot be written or read (full disk, permissions, unreachable)."""


class TooLarge(StorageError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the limit of {limit} bytes")
        self.limit = limit


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in ("..", ".") for part in key.split("/")):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class ArtifactStore(Protocol):
    def write_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> tuple[int, str]:
        """Copy a stream to `key`, atomically; returns (bytes, sha256). Raises TooLarge past max_bytes."""

    def open(self, key: str) -> BinaryIO:
        """Open a stored file for streaming reads."""

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """Keys under a prefix (recursively), sorted."""

    def delete_prefix(self, prefix: str) -> None: ...

    def upload_dir(self, local_dir: Path, prefix: str) -> None:
        """Copy a local directory's files under `prefix` (no-op when prefix already maps to local_dir)."""

    def download_dir(self, prefix: str, local_dir: Path) -> Path:
        """Make the files under `prefix` available in a local directory and return it.

        When `prefix` names a single file (a dataset), the returned path is that file's local copy."""

    def local_dir(self, prefix: str) -> Path | None:
        """The local folder a prefix maps to, when the store is a local folder (workers write there directly).

        None for a remote store (S3): the worker then downloads inputs with `download_dir` into a local cache
        and uploads each complete checkpoint directory with `upload_dir`.
        """

    def iter_file(self, key: str) -> Iterator[bytes]:
        """A stored file as chunks (for streaming HTTP responses)."""


class LocalStore:
    """A folder on a disk the API and the workers share (the embedded default and one-machine compose)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"artifact key {key!r} resolves outside the store")
        return path

    def write_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> tuple[int, str]:
        target = self.path(key)
        digest = hashlib.sha256()
        total = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := stream.read(CHUNK):
                        total += len(chunk)
                        if max_bytes is not None and total > max_bytes:
                            raise TooLarge(max_bytes)
                        digest.update(chunk)
                        out.write(chunk)
                os.replace(tmp_name, target)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"cannot write artifact {key}: {exc.strerror or exc}") from exc
        return total, digest.hexdigest()

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def delete_prefix(self, prefix: str) -> None:
        path = self.path(prefix)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def upload_dir(self, local_dir: Path, prefix: str) -> None:
        target = self.path(prefix)
        if Path(local_dir).resolve() == target:
            return
        shutil.copytree(local_dir, target, dirs_exist_ok=True)

    def download_dir(self, prefix: str, local_dir: Path) -> Path:
        source = self.path(prefix)
        if not source.exists():
            raise FileNotFoundError(prefix)
        return source  # already local: no copy (a folder, or the file when prefix names one)

    def local_dir(self, prefix: str) -> Path | None:
        return self.path(prefix)

    def iter_file(self, key: str) -> Iterator[bytes]:
        with self.open(key) as f:
            while chunk := f.read(CHUNK):
                yield chunk


def get_store(artifacts: str | None = None, *, endpoint_url: str | None = None) -> ArtifactStore:
    """The store named by FINETUNE_ARTIFACTS: a folder (default) or s3://bucket/prefix.

    For S3 the endpoint comes from `endpoint_url`, else FINETUNE_S3_ENDPOINT_URL, else boto3's own
    configuration (AWS_ENDPOINT_URL, ~/.aws); credentials always come from boto3's standard chain
    (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role).
    """
    if artifacts is None or (artifacts.startswith("s3://") and endpoint_url is None):
        from .settings import get_settings

        settings = get_settings()
        artifacts = settings.artifacts if artifacts is None else artifacts
        endpoint_url = endpoint_url or settings.s3_endpoint_url or None
    if artifacts.startswith("s3://"):
        from .storage_s3 import S3Store

        return S3Store.from_url(artifacts, endpoint_url=endpoint_url)
    return LocalStore(artifacts)


# Keys, all derived from ids.
def dataset_key(dataset_id: str, fmt: str) -> str:
    return check_key(f"datasets/{dataset_id}/data.{fmt}")


def job_prefix(job_id: str) -> str:
    return check_key(f"jobs/{job_id}")


def checkpoint_prefix(job_id: str, name: str) -> str:
    return check_key(f"jobs/{job_id}/checkpoints/{name}")
