"""The S3 artifact store (`FINETUNE_ARTIFACTS=s3://bucket/prefix`): AWS S3, MinIO or any S3-compatible server.

Used when the API and the workers run on different machines. Same keys and the same ArtifactStore protocol
as LocalStore; differences a caller must know:
- `local_dir()` is None: a worker downloads its inputs with `download_dir` into a local cache folder and
  uploads each checkpoint directory with `upload_dir` once the directory is complete.
- Objects are immutable per key (keys are derived from ids), so `download_dir` reuses cached files whose
  size matches instead of fetching them again.

Uploads stream: a file is sent in parts of PART_SIZE bytes while its sha256 is computed, so memory stays
bounded whatever the file's size, and the object only appears when the multipart upload completes (an
interrupted upload is aborted and never visible).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .storage import CHUNK, StorageError, TooLarge, check_key

PART_SIZE = 8 << 20  # S3 requires parts of at least 5 MiB (but the last)
MAX_PARTS = 10_000  # S3's limit on parts per upload
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def _is_not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


class S3Store:
    """Artifacts as objects under `s3://bucket/prefix/`."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> None:
        if not _BUCKET.match(bucket):
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = check_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or None
        self._clients: dict[int, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> S3Store:
        """`s3://bucket` or `s3://bucket/some/prefix`."""
        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        return cls(bucket, prefix, endpoint_url=endpoint_url)

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3Store(s3://{self.bucket}/{self.prefix}{where})"

    @property
    def client(self) -> Any:
        # One client per process: celery's prefork children must not share the parent's connection pool.
        pid = os.getpid()
        client = self._clients.get(pid)
        if client is None:
            with self._lock:
                client = self._clients.get(pid)
                if client is None:
                    client = self._clients[pid] = self._make_client()
        return client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        options: dict[str, Any] = {"retries": {"max_attempts": 5, "mode": "standard"}, "connect_timeout": 5,
                                   "read_timeout": 60}
        if self.endpoint_url:
            options["s3"] = {"addressing_style": "path"}  # MinIO and most self-hosted servers
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=session.region_name or "us-east-1",
            config=Config(**options),
        )

    def object_key(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # --- writing ---------------------------------------------------------------------------------------

    def write_stream(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> tuple[int, str]:
        name = self.object_key(key)
        part_size = PART_SIZE
        if max_bytes is not None:  # big enough that max_bytes fits in S3's 10,000 parts
            part_size = max(PART_SIZE, -(-max_bytes // (MAX_PARTS - 1)))
        digest = hashlib.sha256()
        total = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            while True:
                chunk = stream.read(CHUNK)
                if chunk:
                    total += len(chunk)
                    if max_bytes is not None and total > max_bytes:
                        raise TooLarge(max_bytes)
                    digest.update(chunk)
                    buffer += chunk
                if len(buffer) >= part_size or (not chunk and upload_id is not None and buffer):
                    if upload_id is None:
                        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
                    number = len(parts) + 1
                    response = self.client.upload_part(
                        Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=buffer
                    )
                    parts.append({"ETag": response["ETag"], "PartNumber": number})
                    buffer = bytearray()  # a fresh one: the client may still hold a view of the sent part
                if not chunk:
                    break
            if upload_id is None:  # smaller than one part: a single PUT
                self.client.put_object(Bucket=self.bucket, Key=name, Body=bytes(buffer))
            else:
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException as exc:
            if upload_id is not None:
                self._abort(name, upload_id)
            if isinstance(exc, (ClientError, BotoCoreError)):
                raise StorageError(f"cannot write artifact {key}: {_describe(exc)}") from exc
            raise
        return total, digest.hexdigest()

    def _abort(self, name: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except Exception:  # best effort: a bucket lifecycle rule cleans up what is left
            pass

    def upload_dir(self, local_dir: Path, prefix: str) -> None:
        """Upload every regular file under local_dir to `prefix/<relative path>`.

        Symlinks and hidden names (temporary files: `.upload-...`) are skipped, as LocalStore never lists them.
        """
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        root = Path(local_dir)
        if not root.is_dir():
            raise FileNotFoundError(str(local_dir))
        config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE)
        files = sorted(
            p for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        for path in files:
            target = self.object_key(f"{prefix}/{path.relative_to(root).as_posix()}")
            try:
                self.client.upload_file(str(path), self.bucket, target, Config=config)
            except (ClientError, BotoCoreError) as exc:
                raise StorageError(f"cannot upload {path.name} to {prefix}: {_describe(exc)}") from exc

    def delete_prefix(self, prefix: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        names = [self.object_key(prefix)] + [self.object_key(k) for k in self.list(prefix)]
        try:
            for start in range(0, len(names), 1000):
                batch = [{"Key": n} for n in names[start : start + 1000]]
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise StorageError(f"cannot delete {first.get('Key')}: {first.get('Message')}")
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot delete {prefix}: {_describe(exc)}") from exc

    # --- reading ---------------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """A streaming body (read(n), iter_chunks(), close(); usable in `with`). FileNotFoundError if absent."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"]
        except (ClientError, BotoCoreError) as exc:
            if _is_not_found(exc):
                raise FileNotFoundError(key) from exc
            raise StorageError(f"cannot read artifact {key}: {_describe(exc)}") from exc

    def iter_file(self, key: str) -> Iterator[bytes]:
        body = self.open(key)
        try:
            yield from body.iter_chunks(CHUNK)  # type: ignore[attr-defined]
        finally:
            body.close()

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except (ClientError, BotoCoreError) as exc:
            if _is_not_found(exc):
                return None
            raise StorageError(f"cannot read artifact {key}: {_describe(exc)}") from exc

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(key)
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list(self, prefix: str) -> list[str]:
        """Keys under a prefix (recursively), sorted; like LocalStore, names starting with '.' are hidden."""
        return sorted(self._objects(prefix))

    def _objects(self, prefix: str) -> dict[str, int]:
        """{key: size} under a prefix."""
        from botocore.exceptions import BotoCoreError, ClientError

        base = self.object_key(prefix) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: dict[str, int] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for item in page.get("Contents", []):
                    name = item["Key"][strip:]
                    if not name.rsplit("/", 1)[-1].startswith("."):
                        found[name] = int(item["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot list {prefix}: {_describe(exc)}") from exc
        return found

    def download_dir(self, prefix: str, local_dir: Path) -> Path:
        """Fetch the files under `prefix` into local_dir (kept as a cache) and return it.

        `prefix` may also name one object (a dataset file): it is then fetched to the path `local_dir`, and
        that path is returned, as LocalStore.local_dir(key) returns the file's own path.
        """
        objects = self._objects(prefix)
        root = Path(local_dir).resolve()
        if not objects:
            head = self._head(prefix)
            if head is None:
                raise FileNotFoundError(prefix)
            self._fetch(prefix, root, int(head["ContentLength"]))
            return root
        root.mkdir(parents=True, exist_ok=True)
        for key, size in sorted(objects.items()):
            target = (root / key[len(prefix) + 1 :]).resolve()
            if not target.is_relative_to(root):
                raise ValueError(f"artifact key {key!r} resolves outside {root}")
            self._fetch(key, target, size)
        return root

    def _fetch(self, key: str, target: Path, size: int) -> None:
        """Download one object to target atomically, unless a cached copy of the same size is there."""
        from botocore.exceptions import BotoCoreError, ClientError

        if target.is_file() and target.stat().st_size == size:
            return  # immutable per key: the cached copy is current
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=target.parent)
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self.object_key(key), tmp_name)
            os.replace(tmp_name, target)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot download {key}: {_describe(exc)}") from exc
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    def local_dir(self, prefix: str) -> Path | None:
        return None
