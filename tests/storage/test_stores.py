"""The artifact store contract, on a local folder and on a real S3-compatible server (moto, own process).

Both stores must behave the same for every caller: the API (uploads, streamed downloads, deletes) and the
workers (datasets in, checkpoint directories out).
"""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import pytest

from app.storage import LocalStore, StorageError, TooLarge, checkpoint_prefix, dataset_key, get_store, job_prefix
from app.storage_s3 import PART_SIZE, S3Store


class PatternStream(io.RawIOBase):
    """`size` deterministic bytes produced on demand: an upload the test never holds in memory."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.block = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001
        n = min(len(buffer), self.remaining, len(self.block))
        buffer[:n] = self.block[:n]
        self.remaining -= n
        return n

    @staticmethod
    def digest(size: int) -> str:
        stream, h = PatternStream(size), hashlib.sha256()
        while chunk := stream.read(1 << 20):
            h.update(chunk)
        return h.hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("bucket")
    return S3Store(bucket, "deploy/artifacts", endpoint_url=server.endpoint_url)


def test_write_stream_returns_size_and_sha256_and_reads_back_streamed(store) -> None:
    data = os.urandom(300_000)
    key = dataset_key("0f8a3c2e-1d6b-4c55-9a4e-2b7f1c0d9e11", "jsonl")
    assert store.write_stream(key, io.BytesIO(data)) == (len(data), hashlib.sha256(data).hexdigest())
    assert store.exists(key) and store.size(key) == len(data)
    with store.open(key) as body:
        first = body.read(1000)
        rest = body.read()
    assert first + rest == data
    assert b"".join(store.iter_file(key)) == data


def test_write_past_the_limit_stores_nothing(store) -> None:
    key = dataset_key("1f8a3c2e-1d6b-4c55-9a4e-2b7f1c0d9e11", "csv")
    with pytest.raises(TooLarge) as caught:
        store.write_stream(key, io.BytesIO(b"x" * 5000), max_bytes=4096)
    assert caught.value.limit == 4096
    assert not store.exists(key)
    assert store.list("datasets") == []


def test_missing_keys_are_file_not_found(store) -> None:
    assert not store.exists("datasets/nope/data.csv")
    with pytest.raises(FileNotFoundError):
        store.open("datasets/nope/data.csv")
    with pytest.raises(FileNotFoundError):
        store.size("datasets/nope/data.csv")
    with pytest.raises(FileNotFoundError):
        store.download_dir("jobs/nope", Path("/tmp/never-created-by-this-test"))


@pytest.mark.parametrize("key", ["../etc/passwd", "jobs/../../x", "/abs", "jobs//x", "jobs/./x", ""])
def test_keys_cannot_escape_the_store(store, key: str) -> None:
    with pytest.raises(ValueError):
        store.write_stream(key, io.BytesIO(b"x"))


def test_list_is_recursive_sorted_relative_and_hides_dotfiles(store, tmp_path: Path) -> None:
    for key in ["jobs/b/checkpoints/step-2/model.safetensors", "jobs/bb/other.txt"]:
        store.write_stream(key, io.BytesIO(b"1"))
    folder = tmp_path / "step-1"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / ".partial").write_text("a temporary file is never listed")
    store.upload_dir(folder, "jobs/b/checkpoints/step-1")
    assert store.list("jobs/b") == [
        "jobs/b/checkpoints/step-1/config.json",
        "jobs/b/checkpoints/step-2/model.safetensors",
    ]
    assert store.list("jobs/none") == []


def test_delete_prefix_removes_only_that_prefix(store) -> None:
    for key in ["jobs/a/checkpoints/step-1/model.safetensors", "jobs/a/events.txt", "jobs/ab/keep.txt"]:
        store.write_stream(key, io.BytesIO(b"1"))
    store.delete_prefix(job_prefix("a"))
    assert store.list("jobs/a") == []
    assert store.list("jobs/ab") == ["jobs/ab/keep.txt"]
    store.delete_prefix(job_prefix("a"))  # idempotent


def test_checkpoint_dir_round_trip(store, tmp_path: Path) -> None:
    source = tmp_path / "out" / "step-00000010"
    (source / "hf").mkdir(parents=True)
    (source / "model.safetensors").write_bytes(os.urandom(70_000))
    (source / "config.json").write_text('{"step": 10}')
    (source / "hf" / "config.json").write_text("{}")
    prefix = checkpoint_prefix("job1", "step-00000010")
    store.upload_dir(source, prefix)
    assert store.list(prefix) == [f"{prefix}/config.json", f"{prefix}/hf/config.json", f"{prefix}/model.safetensors"]

    local = store.download_dir(prefix, tmp_path / "cache" / "job1")
    for name in ["model.safetensors", "config.json", "hf/config.json"]:
        assert (local / name).read_bytes() == (source / name).read_bytes()


def test_download_of_a_single_file_key_returns_the_file(store, tmp_path: Path) -> None:
    key = dataset_key("2f8a3c2e-1d6b-4c55-9a4e-2b7f1c0d9e11", "jsonl")
    store.write_stream(key, io.BytesIO(b'{"a": 1}\n'))
    local = store.download_dir(key, tmp_path / "cache" / key)
    assert local.is_file() and local.read_bytes() == b'{"a": 1}\n'


def test_s3_store_is_remote_and_caches_downloads(s3_server, bucket: str, tmp_path: Path) -> None:
    store = S3Store(bucket, endpoint_url=s3_server.endpoint_url)
    assert store.local_dir(job_prefix("j")) is None  # the worker must sync, not write in place
    store.write_stream("jobs/j/checkpoints/step-1/model.safetensors", io.BytesIO(b"weights"))
    cache = tmp_path / "cache"
    first = store.download_dir("jobs/j", cache) / "checkpoints/step-1/model.safetensors"
    stamp = first.stat().st_mtime_ns
    store.download_dir("jobs/j", cache)
    assert first.stat().st_mtime_ns == stamp  # immutable per key: the cached copy is reused
    assert not any(p.name.startswith(".download-") for p in cache.rglob("*"))


def test_multipart_upload_streams_with_bounded_memory(s3_server, bucket: str) -> None:
    """A 64 MiB upload goes up in parts without the client ever holding the file."""
    store = S3Store(bucket, "big", endpoint_url=s3_server.endpoint_url)
    size = 64 << 20
    tracemalloc.start()
    try:
        written = store.write_stream("datasets/big/data.jsonl", io.BufferedReader(PatternStream(size)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert written == (size, PatternStream.digest(size))
    head = s3_server.client().head_object(Bucket=bucket, Key="big/datasets/big/data.jsonl")
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith(f"-{-(-size // PART_SIZE)}")  # a multipart object, in parts
    assert peak < 4 * PART_SIZE, f"peak client memory {peak / 2**20:.1f} MiB for a {size >> 20} MiB upload"


def test_aborted_multipart_upload_leaves_no_object_and_no_parts(s3_server, bucket: str) -> None:
    store = S3Store(bucket, endpoint_url=s3_server.endpoint_url)
    with pytest.raises(TooLarge):
        store.write_stream("datasets/x/data.csv", io.BufferedReader(PatternStream(20 << 20)), max_bytes=18 << 20)
    client = s3_server.client()
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_s3_errors_are_storage_errors(s3_server, s3_env) -> None:
    store = S3Store("no-such-bucket-here", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.write_stream("datasets/x/data.csv", io.BytesIO(b"a,b\n"))
    with pytest.raises(StorageError):
        store.list("jobs")


def test_get_store_reads_the_artifacts_setting(monkeypatch: pytest.MonkeyPatch, s3_server, bucket: str) -> None:
    from app.settings import get_settings

    monkeypatch.setenv("FINETUNE_ARTIFACTS", f"s3://{bucket}/prefix/here")
    monkeypatch.setenv("FINETUNE_S3_ENDPOINT_URL", s3_server.endpoint_url)
    get_settings.cache_clear()
    try:
        store = get_store()
    finally:
        get_settings.cache_clear()
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint_url) == (bucket, "prefix/here", s3_server.endpoint_url)
    store.write_stream("datasets/a/data.csv", io.BytesIO(b"a\n"))
    assert s3_server.client().get_object(Bucket=bucket, Key="prefix/here/datasets/a/data.csv")["Body"].read() == b"a\n"
    assert isinstance(get_store("/tmp/x"), LocalStore)
    with pytest.raises(ValueError):
        get_store("s3://Bad_Bucket/x", endpoint_url="http://127.0.0.1:1")
