"""POST/GET/DELETE /datasets against a migrated SQLite and PostgreSQL database and a real artifact folder."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.datasets.models import Dataset
from app.jobs.models import Job, JobDataset


def jsonl(*rows: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(client: TestClient, name: str, data: bytes, headers: dict[str, str] | None = None, **form: str):  # noqa: ANN201
    return client.post("/datasets", files={"file": (name, data)}, data=form or None, headers=headers or {})


def stored_files(settings: Any) -> list[Path]:  # noqa: ANN401
    root = Path(settings.artifacts)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def count(db: Any, model: type) -> int:  # noqa: ANN401
    with db() as session:
        return session.scalar(select(func.count()).select_from(model))


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
GOOD = [
    # filename, bytes, rows, columns, kind, label_counts
    ("reviews.jsonl", jsonl({"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}, {"text": "fine", "label": "pos"}),
     3, ["text", "label"], "text_label", {"pos": 2, "neg": 1}),
    ("prices.jsonl", jsonl({"text": "a house", "target": 1.5}, {"text": "a flat", "target": 0.7}),
     2, ["text", "target"], "text_target", None),
    ("iris.csv", b"sepal,petal,label\n5.1,1.4,setosa\n6.2,4.5,versicolor\n5.9,5.1,virginica\n5.0,1.3,setosa\n",
     4, ["sepal", "petal", "label"], "tabular", {"setosa": 2, "versicolor": 1, "virginica": 1}),
    ("qa.jsonl", jsonl({"prompt": "2+2=", "completion": "4"}), 1, ["prompt", "completion"], "prompt_completion", None),
    ("chat.jsonl", jsonl(CHAT, CHAT), 2, ["messages"], "chat", None),
    ("spam.csv", b"text,label\nwin money now,1\nsee you at lunch,0\n", 2, ["text", "label"], "text_label", {"1": 1, "0": 1}),
]


def test_good_uploads_of_each_shape_are_stored_and_summarised(client: TestClient, settings: Any) -> None:  # noqa: ANN401
    for name, data, rows, columns, kind, label_counts in GOOD:
        r = upload(client, name, data)
        assert r.status_code == 201, (name, r.text)
        body = r.json()
        assert r.headers["location"] == f"/datasets/{body['id']}"
        assert (body["rows"], body["columns"], body["kind"], body["label_counts"]) == (rows, columns, kind, label_counts), name
        assert body["filename"] == name and body["format"] == name.rsplit(".", 1)[1]
        assert body["bytes"] == len(data) and body["sha256"] == hashlib.sha256(data).hexdigest()
        assert len(body["samples"]) == min(rows, 5)
        stored = Path(settings.artifacts) / "datasets" / body["id"] / f"data.{body['format']}"
        assert stored.read_bytes() == data
        assert client.get(f"/datasets/{body['id']}").json() == body


MALFORMED = [
    # name, filename, bytes, message (regex)
    ("malformed json", "d.jsonl", b'{"text": "a", "label": 1}\n{"text": "b" "label": 2}\n',
     r"^line 2: invalid JSON \(Expecting ',' delimiter at column 14\)$"),
    ("non-object line", "d.jsonl", b'{"text": "a", "label": 1}\n"just a string"\n', r"^line 2: expected a JSON object"),
    ("ragged csv", "d.csv", b"text,label\na,1\nb,2\nc,3,4\n", r"^line 4: expected 2 fields \(text, label\), got 3$"),
    ("missing field", "d.jsonl", jsonl({"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c"}),
     r"^line 3: fields differ from line 1 \(missing 'label'\)$"),
    ("mistyped field", "d.jsonl", jsonl({"text": ["not", "text"], "label": 1}), r"^line 1: field 'text' must be a string"),
    ("mistyped role", "d.jsonl", jsonl({"messages": [{"role": "robot", "content": "x"}]}), r"^line 1: messages\[0\]\.role"),
    ("empty csv cell", "d.csv", b"text,label\na,\n", r"^line 2: empty value in column 'label'$"),
    ("empty file", "d.jsonl", b"", r"^the file has no rows$"),
    ("header only", "d.csv", b"text,label\n", r"no rows"),
    ("non-utf8", "d.csv", b"text,label\ncaf\xe9,1\n", r"^line 2: not UTF-8 text \(byte 0xe9 at byte offset 14\)"),
    ("nul bytes", "d.jsonl", b'{"text": "a\x00", "label": 1}\n', r"^line 1: NUL byte"),
]


def test_malformed_uploads_name_the_line_and_leave_nothing(client: TestClient, settings: Any, db: Any) -> None:  # noqa: ANN401
    for name, filename, data, message in MALFORMED:
        r = upload(client, filename, data)
        assert r.status_code == 422, (name, r.text)
        [detail] = r.json()["detail"]
        assert detail["loc"] == ["body", "file"] and detail["type"] == "dataset_invalid", name
        assert re.search(message, detail["msg"]), (name, detail["msg"])
    assert stored_files(settings) == []
    assert count(db, Dataset) == 0 and count(db, Job) == 0
    assert client.get("/datasets").json() == {"items": [], "next_cursor": None}


def test_unsupported_types_and_missing_file_are_422(client: TestClient, settings: Any) -> None:  # noqa: ANN401
    r = upload(client, "data.json", b'[{"text": "a"}]')
    assert r.status_code == 422 and "rename it .jsonl" in r.json()["detail"][0]["msg"]
    r = upload(client, "model.pkl", b"\x80\x04")
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "unsupported_format"
    r = client.post("/datasets", data={"format": "csv"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]
    r = client.post("/datasets", content=b"text,label\n", headers={"content-type": "text/csv"})
    assert r.status_code == 422
    # an extension-less file with the format declared
    r = upload(client, "export", b"text,label\na,1\nb,0\n", format="csv")
    assert r.status_code == 201 and r.json()["format"] == "csv"
    r = upload(client, "export", b"text,label\na,1\n", format="parquet")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "format"]
    assert len(stored_files(settings)) == 1


def test_oversize_uploads_are_413_and_leave_nothing(settings: Any, db: Any) -> None:  # noqa: ANN401
    from app.main import create_app

    small = settings.model_copy(update={"max_upload_bytes": 100})
    with TestClient(create_app(small)) as client:
        # just over the limit: refused by the store while it streams
        r = upload(client, "d.jsonl", jsonl(*[{"text": "abc", "label": i % 2} for i in range(5)]))
        assert r.status_code == 413 and "upload limit of 100 bytes" in r.json()["detail"]
        # far over the limit with a Content-Length: refused before the body is read
        r = upload(client, "d.jsonl", b'{"text": "x", "label": 1}\n' * 10_000)
        assert r.status_code == 413
        # far over the limit, chunked (no Content-Length): refused while the body arrives
        boundary = "b0undary"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.jsonl"\r\n\r\n'.encode()

        def body():  # noqa: ANN202
            yield head
            for _ in range(2000):
                yield b'{"text": "x", "label": 1}\n' * 10
            yield f"\r\n--{boundary}--\r\n".encode()

        r = client.post("/datasets", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413
        assert upload(client, "ok.jsonl", jsonl({"text": "a", "label": 1})).status_code == 201
    assert len(stored_files(settings)) == 1 and count(db, Dataset) == 1


def test_list_is_paginated_newest_first(client: TestClient) -> None:
    ids = [upload(client, f"d{i}.jsonl", jsonl({"text": str(i), "label": i})).json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/datasets", params=params).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert client.get("/datasets", params={"cursor": "garbage!"}).status_code == 422
    assert client.get("/datasets", params={"limit": 0}).status_code == 422


def test_owners_see_only_their_datasets(client: TestClient, make_key: Any) -> None:  # noqa: ANN401
    alice, bob = make_key("alice"), make_key("bob")
    data = jsonl({"text": "a", "label": 1})
    assert upload(client, "d.jsonl", data).status_code == 401  # keys exist: anonymous uploads are refused
    mine = upload(client, "d.jsonl", data, headers=alice).json()["id"]
    assert client.get(f"/datasets/{mine}", headers=alice).status_code == 200
    assert client.get(f"/datasets/{mine}", headers=bob).status_code == 404
    assert client.delete(f"/datasets/{mine}", headers=bob).status_code == 404
    assert client.get("/datasets", headers=bob).json()["items"] == []
    assert [d["id"] for d in client.get("/datasets", headers=alice).json()["items"]] == [mine]


def test_delete_is_refused_while_an_active_job_reads_the_dataset(client: TestClient, settings: Any, db: Any) -> None:  # noqa: ANN401
    dataset_id = upload(client, "d.jsonl", jsonl({"text": "a", "label": 1}, {"text": "b", "label": 0})).json()["id"]
    other = upload(client, "e.jsonl", jsonl({"text": "a", "label": 1})).json()["id"]
    with db() as session:
        job = Job(spec={"task": "classification"}, status="running")
        session.add(job)
        session.flush()
        session.add(JobDataset(job_id=job.id, dataset_id=dataset_id))
        job_id = job.id
    r = client.delete(f"/datasets/{dataset_id}")
    assert r.status_code == 409 and job_id in r.json()["detail"]
    assert (Path(settings.artifacts) / "datasets" / dataset_id / "data.jsonl").is_file()

    assert client.delete(f"/datasets/{other}").status_code == 204  # not used by the job
    with db() as session:
        session.get(Job, job_id).status = "failed"
    assert client.delete(f"/datasets/{dataset_id}").status_code == 204
    assert client.get(f"/datasets/{dataset_id}").status_code == 404
    assert client.delete(f"/datasets/{dataset_id}").status_code == 404
    assert stored_files(settings) == []


def test_idempotency_key_returns_the_first_dataset(client: TestClient, settings: Any, db: Any, make_key: Any) -> None:  # noqa: ANN401
    data = jsonl({"text": "a", "label": 1})
    first = upload(client, "d.jsonl", data, headers={"Idempotency-Key": "k-1"})
    again = upload(client, "other.jsonl", jsonl({"text": "zzz", "label": 2}), headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert count(db, Dataset) == 1 and len(stored_files(settings)) == 1
    assert upload(client, "d.jsonl", data, headers={"Idempotency-Key": "k 2"}).status_code == 422  # not printable ASCII


def test_concurrent_uploads_with_one_key_make_one_dataset(settings: Any, db: Any) -> None:  # noqa: ANN401
    """The loser of the race answers with the winner's dataset and keeps no file of its own."""
    import io

    from app.datasets import service
    from app.db import session_scope
    from app.storage import get_store

    store = get_store(settings.artifacts)
    data = jsonl({"text": "a", "label": 1})
    results: list[str] = []
    with session_scope(settings.database_url) as first:
        winner, created = service.create_dataset(
            first, store, io.BytesIO(data), owner=None, filename="a.jsonl", idempotency_key="race"
        )
        assert created

        def second() -> None:
            with session_scope(settings.database_url) as session:
                dataset, created = service.create_dataset(
                    session, store, io.BytesIO(data), owner=None, filename="b.jsonl", idempotency_key="race"
                )
                results.append(f"{dataset.id}:{created}")

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)  # the second insert waits on the first transaction (row or database lock)
        assert thread.is_alive() or results, "second upload neither blocked nor finished"
    thread.join(30)
    assert results == [f"{winner.id}:False"]
    assert count(db, Dataset) == 1 and len(stored_files(settings)) == 1


HOSTILE = [
    ("../../etc/passwd.jsonl", "passwd.jsonl"),
    ("..\\..\\windows\\system32.jsonl", "system32.jsonl"),
    ("données été 📈.jsonl", "données été _.jsonl"),
    ("x" * 1000 + ".jsonl", "x" * 194 + ".jsonl"),
    ("....jsonl", "jsonl"),
    ("a/b/.hidden.jsonl", "hidden.jsonl"),
]


def test_hostile_filenames_are_sanitised_and_never_paths(client: TestClient, settings: Any) -> None:  # noqa: ANN401
    data = jsonl({"text": "a", "label": 1})
    for raw, shown in HOSTILE:
        r = upload(client, raw, data)
        assert r.status_code == 201, (raw, r.text)
        assert r.json()["filename"] == shown, raw
        assert len(r.json()["filename"]) <= 200
    root = Path(settings.artifacts).resolve()
    files = stored_files(settings)
    assert len(files) == len(HOSTILE)
    assert all(f.resolve().is_relative_to(root / "datasets") and f.name == "data.jsonl" for f in files)
    assert not (root.parent / "etc").exists()


def test_nul_in_filename_is_sanitised() -> None:
    from app.datasets.service import sanitize_filename

    assert sanitize_filename("evil\x00.jsonl", "jsonl") == "evil_.jsonl"
    assert sanitize_filename("", "csv") == "dataset.csv"
    assert sanitize_filename(None, "jsonl") == "dataset.jsonl"


def test_job_dataset_checks_name_the_field(client: TestClient, db: Any) -> None:  # noqa: ANN401
    """The check the jobs API runs at submission: an unknown id, a mapping that does not fit, a fit."""
    from app.datasets.service import check_job_datasets
    from app.errors import Unprocessable
    from worker.training.spec import JobSpec

    one_class = upload(client, "one.jsonl", jsonl({"text": "a", "label": "x"}, {"text": "b", "label": "x"})).json()["id"]
    two = upload(client, "two.jsonl", jsonl({"text": "a", "label": "x"}, {"text": "b", "label": "y"})).json()["id"]

    def spec(train: str, **data: str) -> JobSpec:
        return JobSpec.model_validate({
            "task": "classification",
            "model": {"builtin": "transformer"},
            "data": {"train": train, **data},
        })

    with db() as session:
        assert [d.id for d in check_job_datasets(session, spec(two), None)] == [two]
        with pytest.raises(Unprocessable) as info:
            check_job_datasets(session, spec(one_class), None)
        [detail] = info.value.detail
        assert detail["loc"] == ["body", "data", "label_field"]
        assert "one.jsonl" in detail["msg"] and "at least 2 classes" in detail["msg"]
        with pytest.raises(Unprocessable) as info:
            check_job_datasets(session, spec(two, label_field="category"), None)
        assert "no column 'category'" in info.value.detail[0]["msg"]
        with pytest.raises(Unprocessable) as info:
            check_job_datasets(session, spec("0" * 32), None)
        assert info.value.detail[0]["loc"] == ["body", "data", "train"]
        with pytest.raises(Unprocessable):
            check_job_datasets(session, spec(two), "someone-else")
