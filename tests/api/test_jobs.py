"""POST/GET /jobs: creation, validation, idempotency, server caps, lineage, listing and pagination."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from api_support import SPEC, spec


def _locs(response) -> list[list[Any]]:  # noqa: ANN001
    assert response.status_code == 422, response.text
    return [e["loc"] for e in response.json()["detail"]]


def test_create_read_and_enqueue(client, settings) -> None:  # noqa: ANN001
    from worker.leases import pending_job_ids

    created = client.post("/jobs", json=SPEC)
    assert created.status_code == 201, created.text
    job = created.json()
    assert created.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["queue"] == "cpu" and job["name"] == "digits-mlp"
    assert job["spec"]["hyperparameters"]["batch_size"] == 32  # stored with defaults filled in
    assert job["spec"]["regularization"]["weight_decay"] == 0.0
    assert job["progress"] == {"step": 0, "total_steps": None, "epoch": 0.0}
    assert job["error"] is None and job["result"] is None and job["base_job_id"] is None
    assert job["max_attempts"] == settings.max_attempts

    assert client.get(f"/jobs/{job['id']}").json() == job
    assert job["id"] in pending_job_ids("cpu", settings)  # the message was sent after the commit
    events = client.get(f"/jobs/{job['id']}/events").json()
    assert [e["type"] for e in events] == ["created", "no_worker"]  # no worker runs in these tests
    assert events[1]["level"] == "warning"
    assert "no live worker consumes queue 'cpu' (no worker is running)" in events[1]["message"]
    assert "finetune worker --queues cpu" in events[1]["message"]


def test_workers_report_their_queues_and_jobs_on_an_unconsumed_queue_say_so(client, db, settings) -> None:  # noqa: ANN001
    from datetime import timedelta

    from app.db import utcnow
    from app.workers.models import Worker
    from app.workers.service import record_heartbeat

    assert client.get("/workers").json() == []
    with db() as session:
        record_heartbeat(session, name="finetune-1@gpu-box", hostname="gpu-box", pid=1, queues=["gpu", "cpu", "gpu"],
                         concurrency=2, started_at=utcnow())
        record_heartbeat(session, name="finetune-2@old", hostname="old", pid=2, queues=["big"], concurrency=1,
                         started_at=utcnow())
        session.get(Worker, "finetune-2@old").last_seen_at = utcnow() - timedelta(
            seconds=3 * settings.heartbeat_seconds + 1)  # missed three heartbeats: not live
    [live] = client.get("/workers").json()
    assert live["name"] == "finetune-1@gpu-box" and live["queues"] == ["cpu", "gpu"] and live["concurrency"] == 2

    consumed = client.post("/jobs", json=SPEC).json()
    assert [e["type"] for e in client.get(f"/jobs/{consumed['id']}/events").json()] == ["created"]
    waiting = client.post("/jobs", json=spec(resources={"queue": "big"})).json()
    assert waiting["status"] == "queued"
    [_, warning] = client.get(f"/jobs/{waiting['id']}/events").json()
    assert warning["type"] == "no_worker" and warning["level"] == "warning"
    assert "no live worker consumes queue 'big' (live workers consume 'cpu', 'gpu')" in warning["message"]


def test_gpu_queue_follows_the_spec(client) -> None:  # noqa: ANN001
    job = client.post("/jobs", json=spec(resources={"gpus": 1})).json()
    assert job["queue"] == "gpu"


@pytest.mark.parametrize(
    "body, loc",
    [
        (spec(epochs=3), ["body", "epochs"]),
        (spec(hyperparameters={"epochs": 1, "learnig_rate": 0.1}), ["body", "hyperparameters", "learnig_rate"]),
        (spec(data={"train": "builtin:digits", "shuffle": True}), ["body", "data", "shuffle"]),
        (spec(model={"builtin": "mlp", "config": {"hidden": [3]}}), ["body", "model", "builtin:mlp", "config", "hidden"]),
        (spec(freeze={"pattern": ["x"]}), ["body", "freeze", "pattern"]),
        (spec(regularization={"l3": 0.1}), ["body", "regularization", "l3"]),
        (spec(model={"builtin": "resnet"}), ["body", "model"]),
        (spec(data={"train": "builtin:nope"}), ["body", "data", "train"]),
        (spec(task="translation"), ["body", "task"]),
    ],
)
def test_invalid_specs_get_422_naming_the_field(client, body, loc) -> None:  # noqa: ANN001
    assert loc in _locs(client.post("/jobs", json=body))


def test_malformed_json_and_wrong_types_are_422(client) -> None:  # noqa: ANN001
    bad = client.post("/jobs", content=b'{"task": ', headers={"Content-Type": "application/json"})
    assert bad.status_code == 422
    assert client.post("/jobs", json=[1, 2]).status_code == 422
    assert client.post("/jobs", json=spec(hyperparameters={"epochs": "many"})).status_code == 422
    # Python's json accepts Infinity; a job spec must still be finite.
    inf = b'{"task": "classification", "model": {"builtin": "mlp"}, "data": {"train": "builtin:digits"}, ' \
          b'"regularization": {"max_grad_norm": Infinity}}'
    response = client.post("/jobs", content=inf, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert client.get("/jobs").json()["items"] == []


def test_unknown_foreign_or_unfit_dataset_is_422(client, db, make_key) -> None:  # noqa: ANN001
    from app.jobs.models import JobDataset

    alice, mallory = make_key("alice"), make_key("mallory")
    rows = b"".join(b'{"text": "review %d", "label": "%s"}\n' % (i, b"pos" if i % 2 else b"neg") for i in range(20))

    def upload(headers: dict[str, str]) -> str:
        response = client.post("/datasets", files={"file": ("reviews.jsonl", rows)}, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    mine, theirs = upload(alice), upload(mallory)
    text = {"model": {"builtin": "transformer"}}
    body = spec(**text, data={"train": str(uuid.uuid4())})
    assert ["body", "data", "train"] in _locs(client.post("/jobs", json=body, headers=alice))
    body = spec(**text, data={"train": mine, "validation": theirs})  # someone else's is as good as missing
    assert ["body", "data", "validation"] in _locs(client.post("/jobs", json=body, headers=alice))
    body = spec(**text, data={"train": mine, "label_field": "stars"})  # the dataset has no such column
    assert ["body", "data", "label_field"] in _locs(client.post("/jobs", json=body, headers=alice))

    created = client.post("/jobs", json=spec(**text, data={"train": mine}), headers=alice)
    assert created.status_code == 201, created.text
    with db() as session:
        assert session.get(JobDataset, (created.json()["id"], mine)) is not None
    assert client.delete(f"/datasets/{mine}", headers=alice).status_code == 409  # in use by a queued job


def test_server_caps(app, client, settings) -> None:  # noqa: ANN001
    app.state.settings = settings.model_copy(
        update={"max_epochs": 2, "max_steps": 10, "max_runtime_seconds": 60, "max_running_jobs_per_owner": 2}
    )
    assert ["body", "hyperparameters", "epochs"] in _locs(client.post("/jobs", json=spec(hyperparameters={"epochs": 3})))
    body = spec(hyperparameters={"epochs": 1, "max_steps": 11})
    assert ["body", "hyperparameters", "max_steps"] in _locs(client.post("/jobs", json=body))
    assert ["body", "max_runtime_seconds"] in _locs(client.post("/jobs", json=spec(max_runtime_seconds=61)))

    first = client.post("/jobs", json=SPEC).json()
    assert first["spec"]["max_runtime_seconds"] == 60  # the cap applies when the spec sets none
    assert client.post("/jobs", json=spec(max_runtime_seconds=30)).json()["spec"]["max_runtime_seconds"] == 30
    third = client.post("/jobs", json=SPEC)
    assert third.status_code == 429 and "at most 2" in third.json()["detail"]
    client.post(f"/jobs/{first['id']}/cancel")
    assert client.post("/jobs", json=SPEC).status_code == 201


def test_idempotency_key(client) -> None:  # noqa: ANN001
    headers = {"Idempotency-Key": "build-42"}
    first = client.post("/jobs", json=SPEC, headers=headers)
    again = client.post("/jobs", json=SPEC, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]

    different = client.post("/jobs", json=spec(name="other"), headers=headers)
    assert different.status_code == 409 and "Idempotency-Key" in different.json()["detail"]
    assert client.post("/jobs", json=SPEC, headers={"Idempotency-Key": "build-43"}).status_code == 201
    assert client.post("/jobs", json=SPEC, headers={"Idempotency-Key": ""}).status_code == 422
    assert client.post("/jobs", json=SPEC, headers={"Idempotency-Key": "x" * 201}).status_code == 422
    assert len(client.get("/jobs").json()["items"]) == 2


@pytest.mark.parametrize("mode", ["open", "owner"])
def test_concurrent_identical_requests_create_one_job(app, make_key, mode) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    # With an owner the (owner, key) constraint arbitrates; in open mode (owner NULL) a partial unique index.
    auth = make_key("alice") if mode == "owner" else {}
    headers = {**auth, "Idempotency-Key": "race"}
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(6)

    def submit() -> None:
        with TestClient(app) as c:
            barrier.wait()
            r = c.post("/jobs", json=SPEC, headers=headers)
            results.append((r.status_code, r.json().get("id", r.text)))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(code for code, _ in results)
    assert codes == [200] * 5 + [201], results
    assert len({job_id for _, job_id in results}) == 1
    with TestClient(app) as c:
        assert len(c.get("/jobs", headers=auth).json()["items"]) == 1


def test_transfer_learning_lineage(client, db, finish_job) -> None:  # noqa: ANN001
    from app.jobs.models import Checkpoint

    base = client.post("/jobs", json=SPEC).json()
    from_job = spec(model={"from_job": base["id"], "checkpoint": "best"})
    assert ["body", "model", "from_job"] in _locs(client.post("/jobs", json=from_job))  # still queued
    finish_job(base["id"], "succeeded")
    assert ["body", "model", "checkpoint"] in _locs(client.post("/jobs", json=from_job))  # no checkpoints
    with db() as session:
        rows = [
            Checkpoint(job_id=base["id"], name=f"step-{s:08d}", step=s, epoch=1.0, size_bytes=1, sha256="0" * 64,
                       storage_key=f"jobs/{base['id']}/checkpoints/step-{s:08d}", is_best=(s == 10), is_final=(s == 20))
            for s in (10, 20)
        ]
        session.add_all(rows)
        session.flush()
        best, last = rows[0].id, rows[1].id

    job = client.post("/jobs", json=from_job).json()
    assert (job["base_job_id"], job["base_checkpoint_id"]) == (base["id"], best)
    job = client.post("/jobs", json=spec(model={"from_job": base["id"], "checkpoint": "last"})).json()
    assert job["base_checkpoint_id"] == last
    job = client.post("/jobs", json=spec(model={"from_job": base["id"], "checkpoint": best})).json()
    assert job["base_checkpoint_id"] == best
    unknown = spec(model={"from_job": base["id"], "checkpoint": str(uuid.uuid4())})
    assert ["body", "model", "checkpoint"] in _locs(client.post("/jobs", json=unknown))
    for bad in (str(uuid.uuid4()), "../../etc"):
        assert ["body", "model", "from_job"] in _locs(client.post("/jobs", json=spec(model={"from_job": bad})))


def test_list_newest_first_with_pagination_and_status_filter(client, finish_job) -> None:  # noqa: ANN001
    ids = [client.post("/jobs", json=spec(name=f"job-{i}")).json()["id"] for i in range(5)]
    finish_job(ids[1], "failed", error_type="DataError", error_message="bad row")

    seen, cursor = [], None
    while True:
        page = client.get("/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]

    failed = client.get("/jobs", params={"status": "failed"}).json()
    assert [j["id"] for j in failed["items"]] == [ids[1]] and failed["next_cursor"] is None
    assert failed["items"][0]["error"] == {"type": "DataError", "message": "bad row"}
    assert len(client.get("/jobs", params={"status": "queued"}).json()["items"]) == 4

    for params in ({"status": "done"}, {"limit": 0}, {"limit": 201}, {"limit": "x"}, {"cursor": "garbage!"},
                   {"cursor": "WzEsMl0"}, {"cursor": "x" * 300}):
        assert client.get("/jobs", params=params).status_code == 422, params


def test_a_failing_worker_check_never_fails_the_creation(client, db) -> None:  # noqa: ANN001
    """The no_worker check runs after the commit: if it fails, the job is still created once and answered 201."""
    from sqlalchemy import text

    with db() as session:
        session.execute(text("ALTER TABLE workers RENAME TO workers_away"))
    try:
        created = client.post("/jobs", json=SPEC)
    finally:
        with db() as session:
            session.execute(text("ALTER TABLE workers_away RENAME TO workers"))
    assert created.status_code == 201, created.text
    assert [e["type"] for e in client.get(f"/jobs/{created.json()['id']}/events").json()] == ["created"]
    assert client.get("/jobs").json()["items"][0]["id"] == created.json()["id"]
