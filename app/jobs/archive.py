"""A checkpoint as one streamed tar archive.

The archive is produced block by block while the client reads it: a header per file, the file's
bytes read from the artifact store chunk by chunk, padding, and the end-of-archive marker. Nothing is
held in memory beyond one chunk, and the total length is known up front (Content-Length), because tar
headers carry sizes the store already knows. Uncompressed tar: weights do not compress much, and
`tar xf`, Python's tarfile and every OS can read it.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..storage import CHUNK, ArtifactStore, checkpoint_prefix
from .models import Checkpoint, Job

BLOCK = tarfile.BLOCKSIZE
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


@dataclass
class Member:
    header: bytes
    size: int
    source: BinaryIO

    @property
    def length(self) -> int:
        return len(self.header) + self.size + (-self.size % BLOCK)


@dataclass
class CheckpointArchive:
    filename: str
    members: list[Member] = field(default_factory=list)

    @property
    def content_length(self) -> int:
        return sum(m.length for m in self.members) + len(END_OF_ARCHIVE)

    def close(self) -> None:
        for member in self.members:
            member.source.close()

    def stream(self) -> Iterator[bytes]:
        try:
            for member in self.members:
                yield member.header
                remaining = member.size
                while remaining:
                    chunk = member.source.read(min(CHUNK, remaining))
                    if not chunk:  # the file shrank under us: fail loudly rather than send a corrupt archive
                        raise OSError(f"artifact ended {remaining} bytes early")
                    remaining -= len(chunk)
                    yield chunk
                if pad := -member.size % BLOCK:
                    yield b"\0" * pad
            yield END_OF_ARCHIVE
        finally:
            self.close()


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


PRIVATE_FILES = frozenset({"training_state.pt"})


def open_checkpoint_archive(store: ArtifactStore, job: Job, checkpoint: Checkpoint) -> CheckpointArchive | None:
    """Open every file of the checkpoint now (so a checkpoint rotated away mid-download on a local disk
    stays readable), or None when the store holds no files for it."""
    prefix = checkpoint_prefix(job.id, checkpoint.name)
    # The resume state (optimizer, RNG) is the service's own and in torch's pickle-based format: users
    # get safetensors and JSON only, so nothing they download ever needs unpickling.
    keys = [key for key in store.list(prefix) if key.rsplit("/", 1)[-1] not in PRIVATE_FILES]
    if not keys:
        return None
    top = f"{job.id}-{checkpoint.name}"
    mtime = checkpoint.created_at.timestamp()
    archive = CheckpointArchive(filename=f"{top}.tar")
    try:
        for key in keys:
            relative = key[len(prefix) + 1 :]
            source = store.open(key)
            archive.members.append(Member(b"", 0, source))  # closed with the archive if the next line fails
            size = store.size(key)
            archive.members[-1] = Member(_header(f"{top}/{relative}", size, mtime), size, source)
        if f"{prefix}/spec.json" not in keys:
            spec = _spec_bytes(job.spec)
            archive.members.append(Member(_header(f"{top}/spec.json", len(spec), mtime), len(spec), io.BytesIO(spec)))
    except FileNotFoundError:  # rotated away between listing and opening
        archive.close()
        return None
    except BaseException:
        archive.close()
        raise
    return archive


def _spec_bytes(spec: dict[str, Any]) -> bytes:
    return (json.dumps(spec, indent=2, sort_keys=False) + "\n").encode()
