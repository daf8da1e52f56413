"""Two owners, every resource and verb: another owner's job, checkpoint or dataset is a 404 (never a 403
that confirms it exists), lists show only one's own, and nothing of the other owner changes."""

from __future__ import annotations

import collections
import uuid

import pytest

from security_support import SPEC

JOB_READS = [
    "/jobs/{job}",
    "/jobs/{job}/events",
    "/jobs/{job}/events/stream",
    "/jobs/{job}/metrics",
    "/jobs/{job}/checkpoints",
    "/jobs/{job}/checkpoints/{checkpoint}/download",
    "/jobs/{job}/checkpoints/best/download",
    "/jobs/{job}/checkpoints/last/download",
    "/datasets/{dataset}",
]
WRITES = [("POST", "/jobs/{job}/cancel"), ("DELETE", "/jobs/{job}"), ("DELETE", "/datasets/{dataset}")]


def _urls(owned, paths):  # noqa: ANN001, ANN202
    ids = {"job": owned.job_id, "checkpoint": owned.checkpoint_id, "dataset": owned.dataset_id}
    return [p.format(**ids) for p in paths]


def test_another_owner_gets_404_for_every_read_and_write(client, make_owned) -> None:  # noqa: ANN001
    alice, bob = make_owned("alice"), make_owned("bob")
    for url in _urls(alice, JOB_READS):
        assert client.get(url, headers=alice.headers).status_code == 200, url  # the owner can
        response = client.get(url, headers=bob.headers)
        assert response.status_code == 404, (url, response.text)
        assert b"weights of alice" not in response.content
    for method, path in WRITES:
        url = path.format(job=alice.job_id, dataset=alice.dataset_id)
        response = client.request(method, url, headers=bob.headers)
        assert response.status_code == 404, (method, url, response.text)
    # nothing of alice's changed: the job is not cancelled or deleted, the dataset and files are there
    job = client.get(f"/jobs/{alice.job_id}", headers=alice.headers).json()
    assert job["status"] == "succeeded" and not job["cancel_requested"]
    assert client.get(f"/datasets/{alice.dataset_id}", headers=alice.headers).status_code == 200
    assert (alice.checkpoint_dir / "model.safetensors").is_file()


def test_lists_show_only_ones_own(client, make_owned) -> None:  # noqa: ANN001
    alice, bob = make_owned("alice"), make_owned("bob")
    for owner, other in ((alice, bob), (bob, alice)):
        jobs = client.get("/jobs", headers=owner.headers).json()["items"]
        assert [j["id"] for j in jobs] == [owner.job_id]
        for status in ("succeeded", "queued"):
            listed = client.get("/jobs", params={"status": status}, headers=owner.headers).json()["items"]
            assert other.job_id not in {j["id"] for j in listed}
        datasets = client.get("/datasets", headers=owner.headers).json()["items"]
        assert [d["id"] for d in datasets] == [owner.dataset_id]


def test_another_owners_dataset_or_job_cannot_be_used_in_a_spec(client, make_owned) -> None:  # noqa: ANN001
    alice, bob = make_owned("alice"), make_owned("bob")
    borrowed = {**SPEC, "task": "classification", "model": {"builtin": "transformer"},
                "data": {"train": alice.dataset_id}}
    response = client.post("/jobs", json=borrowed, headers=bob.headers)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "data", "train"]
    stolen = client.post("/jobs", json={**SPEC, "model": {"from_job": alice.job_id}}, headers=bob.headers)
    assert stolen.status_code == 422 and alice.job_id in stolen.text
    # the refusal reads the same as for an id that does not exist: nothing confirms alice's job exists
    assert "no job with id" in stolen.json()["detail"][0]["msg"]


def test_idempotency_keys_never_cross_owners(client, make_owned) -> None:  # noqa: ANN001
    alice, bob = make_owned("alice"), make_owned("bob")
    first = client.post("/jobs", json=SPEC, headers={**alice.headers, "Idempotency-Key": "same"})
    theirs = client.post("/jobs", json=SPEC, headers={**bob.headers, "Idempotency-Key": "same"})
    assert first.status_code == theirs.status_code == 201 and first.json()["id"] != theirs.json()["id"]
    upload = {"file": ("d.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')}
    a = client.post("/datasets", files=upload, headers={**alice.headers, "Idempotency-Key": "d"})
    b = client.post("/datasets", files=upload, headers={**bob.headers, "Idempotency-Key": "d"})
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]
    # and each owner's replay returns their own first result
    again = client.post("/jobs", json=SPEC, headers={**bob.headers, "Idempotency-Key": "same"})
    assert again.status_code == 200 and again.json()["id"] == theirs.json()["id"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer ft_wrong"}, {"Authorization": "Token abc"},
                                     {"Authorization": "Bearer "}, {"Authorization": "Bearer " + "x" * 5000}])
def test_no_valid_key_no_entry_anywhere_but_health(client, make_owned, headers) -> None:  # noqa: ANN001
    alice = make_owned("alice")
    paths = client.get("/openapi.json", headers=alice.headers).json()["paths"]
    routes = [(set(ops), path) for path, ops in paths.items()] + [({"get"}, "/openapi.json"), ({"get"}, "/docs")]
    checked = 0
    for methods, path in routes:
        ids = {"job_id": alice.job_id, "checkpoint_id": alice.checkpoint_id, "dataset_id": alice.dataset_id}
        url = path.format_map(collections.defaultdict(lambda: str(uuid.uuid4()), ids))  # any other id: a fresh one
        for method in methods:
            response = client.request(method, url, headers=headers)
            expected = 200 if path == "/health" else 401
            assert response.status_code == expected, (method, url, response.status_code, response.text)
            checked += 1
    assert checked >= 15
    job = client.get(f"/jobs/{alice.job_id}", headers=alice.headers).json()
    assert job["status"] == "succeeded"
