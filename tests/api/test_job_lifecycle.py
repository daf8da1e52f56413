"""Cancel, delete, metrics, events (polling and SSE), checkpoints and their streamed download."""

from __future__ import annotations

import io
import json
import math
import tarfile
import uuid
from pathlib import Path

import pytest
from api_support import SPEC


@pytest.fixture
def job_id(client, db) -> str:  # noqa: ANN001
    from app.db import utcnow
    from app.workers.service import record_heartbeat

    with db() as session:  # a live worker on the job's queue: its events are the job's own, no warning
        record_heartbeat(session, name="finetune-1@test", hostname="test", pid=1, queues=["cpu"], concurrency=1,
                         started_at=utcnow())
    return client.post("/jobs", json=SPEC).json()["id"]


def test_cancel_queued_running_and_finished(client, finish_job, job_id) -> None:  # noqa: ANN001
    cancelled = client.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"] is not None
    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]

    running = client.post("/jobs", json=SPEC).json()["id"]
    finish_job(running, "running")
    response = client.post(f"/jobs/{running}/cancel").json()
    assert response["status"] == "running" and response["cancel_requested"] is True
    assert client.post(f"/jobs/{running}/cancel").status_code == 200  # asking twice is harmless
    types = [e["type"] for e in client.get(f"/jobs/{running}/events").json()]
    assert types.count("cancel_requested") == 1

    done = client.post("/jobs", json=SPEC).json()["id"]
    finish_job(done, "succeeded")
    assert client.post(f"/jobs/{done}/cancel").status_code == 409
    assert client.get(f"/jobs/{done}").json()["status"] == "succeeded"


def _checkpoint(db, store_root: Path, job_id: str, step: int, files: dict[str, bytes], **flags) -> str:  # noqa: ANN001
    from app.jobs.models import Checkpoint

    name = f"step-{step:08d}"
    folder = store_root / "jobs" / job_id / "checkpoints" / name
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    with db() as session:
        row = Checkpoint(job_id=job_id, name=name, step=step, epoch=step / 10, metrics={"val_loss": 1.0 / step},
                         size_bytes=sum(map(len, files.values())), sha256="a" * 64,
                         storage_key=f"jobs/{job_id}/checkpoints/{name}", **flags)
        session.add(row)
        session.flush()
        return row.id


def test_delete_removes_rows_and_files(client, db, settings, finish_job, job_id) -> None:  # noqa: ANN001
    from app.jobs.models import Checkpoint, JobEvent

    root = Path(settings.artifacts)
    _checkpoint(db, root, job_id, 10, {"model.safetensors": b"w" * 10})
    other = client.post("/jobs", json=SPEC).json()["id"]
    _checkpoint(db, root, other, 10, {"model.safetensors": b"v"})

    finish_job(job_id, "running")
    assert client.delete(f"/jobs/{job_id}").status_code == 409
    finish_job(job_id, "succeeded")
    child = client.post("/jobs", json={**SPEC, "model": {"from_job": job_id}}).json()["id"]
    assert client.delete(f"/jobs/{job_id}").status_code == 409  # an active job starts from it
    client.post(f"/jobs/{child}/cancel")

    assert client.delete(f"/jobs/{job_id}").status_code == 204
    assert client.get(f"/jobs/{job_id}").status_code == 404
    assert not (root / "jobs" / job_id).exists()
    assert (root / "jobs" / other / "checkpoints").is_dir()  # only that job's files
    with db() as session:
        assert session.query(Checkpoint).filter_by(job_id=job_id).count() == 0
        assert session.query(JobEvent).filter_by(job_id=job_id).count() == 0
    assert client.delete(f"/jobs/{job_id}").status_code == 404
    assert client.delete(f"/jobs/{other}").status_code == 204  # a queued job can be deleted


def test_metrics_downsampling_keeps_first_last_and_extremes(client, db, job_id) -> None:  # noqa: ANN001
    from app.jobs.models import MetricPoint

    values = {step: math.sin(step / 50) + step / 1000 for step in range(1, 2001)}
    values[777] = -50.0  # a spike down and one up must survive
    values[1333] = 80.0
    with db() as session:
        session.add_all(MetricPoint(job_id=job_id, name="train_loss", step=s, value=v) for s, v in values.items())
        session.add_all(MetricPoint(job_id=job_id, name="val_loss", step=s, value=1.0 / s) for s in (100, 200))
        session.add(MetricPoint(job_id=job_id, name="lr", step=1, value=0.1))

    full = client.get(f"/jobs/{job_id}/metrics").json()["series"]
    assert set(full) == {"train_loss", "val_loss", "lr"}
    assert full["val_loss"] == [[100, 0.01], [200, 0.005]]
    assert len(full["train_loss"]) == 1000

    for max_points in (2, 3, 10, 101, 1000):
        got = client.get(f"/jobs/{job_id}/metrics", params={"names": "train_loss", "max_points": max_points}).json()
        points = got["series"]["train_loss"]
        assert list(got["series"]) == ["train_loss"]
        assert 2 <= len(points) <= max_points
        steps = [s for s, _ in points]
        assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 2000
        if max_points >= 4:
            assert [777, -50.0] in points and [1333, 80.0] in points
    both = client.get(f"/jobs/{job_id}/metrics", params={"names": "val_loss, lr,nope"}).json()["series"]
    assert set(both) == {"val_loss", "lr"}
    for params in ({"max_points": 1}, {"max_points": 100_001}, {"names": "a\x00b"}, {"names": "x" * 101}):
        assert client.get(f"/jobs/{job_id}/metrics", params=params).status_code == 422, params


def test_non_finite_values_are_reported_as_null(client, db, settings, job_id) -> None:  # noqa: ANN001
    from app.jobs.models import Job, MetricPoint

    with db() as session:
        session.add(MetricPoint(job_id=job_id, name="train_loss", step=1, value=float("inf")))
        if settings.is_sqlite:  # PostgreSQL's JSON refuses Infinity outright; SQLite stores it
            session.get(Job, job_id).latest_metrics = {"train_loss": float("inf")}
    assert client.get(f"/jobs/{job_id}/metrics").json()["series"]["train_loss"] == [[1, None]]
    if settings.is_sqlite:
        assert client.get(f"/jobs/{job_id}").json()["latest_metrics"] == {"train_loss": None}


def test_events_after_and_limit(client, db, job_id) -> None:  # noqa: ANN001
    from app.jobs.repository import add_event

    with db() as session:
        for i in range(5):
            add_event(session, job_id, "progress", f"step {i}", data={"step": i})
    events = client.get(f"/jobs/{job_id}/events").json()
    assert [e["type"] for e in events] == ["created"] + ["progress"] * 5
    assert set(events[0]) == {"id", "created_at", "level", "type", "message", "data"}
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    after = client.get(f"/jobs/{job_id}/events", params={"after": ids[2], "limit": 2}).json()
    assert [e["id"] for e in after] == ids[3:5] and after[0]["data"] == {"step": 2}
    assert client.get(f"/jobs/{job_id}/events", params={"after": ids[-1]}).json() == []
    for params in ({"after": -1}, {"limit": 0}, {"limit": 1001}, {"after": 2**63}):
        assert client.get(f"/jobs/{job_id}/events", params=params).status_code == 422


def test_event_stream_follows_until_the_job_ends(client, db, finish_job, job_id) -> None:  # noqa: ANN001
    from app.jobs.repository import add_event

    with db() as session:
        add_event(session, job_id, "started", "running")
    finish_job(job_id, "succeeded")
    with client.stream("GET", f"/jobs/{job_id}/events/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join(response.iter_text())
    payloads = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    assert [p["type"] for p in payloads] == ["created", "started"]
    assert "event: started" in body
    resumed = client.get(f"/jobs/{job_id}/events/stream", headers={"Last-Event-ID": str(payloads[0]["id"])}).text
    assert [json.loads(line[5:])["type"] for line in resumed.splitlines() if line.startswith("data:")] == ["started"]


def test_checkpoints_list_and_streamed_download(client, db, settings, finish_job, job_id) -> None:  # noqa: ANN001
    root = Path(settings.artifacts)
    weights = bytes(range(256)) * 5000  # > 1 MiB: several chunks
    first = _checkpoint(db, root, job_id, 10, {"model.safetensors": b"old", "config.json": b"{}"}, is_best=True)
    last = _checkpoint(db, root, job_id, 20, {"model.safetensors": weights, "config.json": b'{"a": 1}',
                                                "hf/config.json": b"{}", "training_state.pt": b"resume"},
                       is_final=True)
    finish_job(job_id, "succeeded", result={"best_checkpoint_id": first, "final_checkpoint_id": last, "metrics": {}})

    listed = client.get(f"/jobs/{job_id}/checkpoints").json()
    assert [c["id"] for c in listed] == [first, last]
    assert set(listed[0]) == {"id", "name", "step", "epoch", "metrics", "size_bytes", "sha256", "created_at",
                              "is_best", "is_final"}
    assert listed[0]["is_best"] and listed[1]["is_final"] and listed[0]["metrics"] == {"val_loss": 0.1}
    assert client.get(f"/jobs/{job_id}").json()["result"]["best_checkpoint_id"] == first

    for ref, expected in ((last, last), ("last", last), ("best", first)):
        with client.stream("GET", f"/jobs/{job_id}/checkpoints/{ref}/download") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-tar"
            chunks = list(response.iter_raw())
        data = b"".join(chunks)
        assert int(response.headers["content-length"]) == len(data)
        name = "step-00000020" if expected == last else "step-00000010"
        assert response.headers["content-disposition"] == f'attachment; filename="{job_id}-{name}.tar"'
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        top = f"{job_id}-{name}"
        if expected == last:  # the resume state (torch's pickle format) is never handed out
            assert set(members) == {f"{top}/model.safetensors", f"{top}/config.json", f"{top}/hf/config.json",
                                    f"{top}/spec.json"}
            assert members[f"{top}/model.safetensors"] == weights
        else:
            assert set(members) == {f"{top}/model.safetensors", f"{top}/config.json", f"{top}/spec.json"}
        assert json.loads(members[f"{top}/spec.json"])["name"] == "digits-mlp"

    assert client.get(f"/jobs/{job_id}/checkpoints/{uuid.uuid4()}/download").status_code == 404
    assert client.get(f"/jobs/{job_id}/checkpoints/..%2F..%2Fetc/download").status_code == 404
    empty = client.post("/jobs", json=SPEC).json()["id"]
    assert client.get(f"/jobs/{empty}/checkpoints").json() == []
    assert client.get(f"/jobs/{empty}/checkpoints/best/download").status_code == 404
    # Files gone from the store while the row remains: a clear 404, not a broken archive.
    import shutil

    shutil.rmtree(root / "jobs" / job_id / "checkpoints" / "step-00000010")
    gone = client.get(f"/jobs/{job_id}/checkpoints/{first}/download")
    assert gone.status_code == 404 and "no longer" in gone.json()["detail"]


def test_download_is_streamed_not_buffered(settings, db, client, job_id) -> None:  # noqa: ANN001
    """The archive generator reads the store chunk by chunk: the first bytes leave before the file is read."""
    from app.jobs.archive import open_checkpoint_archive
    from app.jobs.models import Checkpoint, Job
    from app.storage import CHUNK, get_store

    root = Path(settings.artifacts)
    cid = _checkpoint(db, root, job_id, 5, {"model.safetensors": b"x" * (3 * CHUNK + 7)})
    store = get_store(settings.artifacts)
    with db() as session:
        archive = open_checkpoint_archive(store, session.get(Job, job_id), session.get(Checkpoint, cid))
    stream = archive.stream()
    header = next(stream)
    assert len(header) % 512 == 0
    source = archive.members[0].source
    assert source.tell() == 0  # nothing read yet
    assert len(next(stream)) == CHUNK and source.tell() == CHUNK
    rest = b"".join(stream)
    assert len(header) + CHUNK + len(rest) == archive.content_length
    assert source.closed
