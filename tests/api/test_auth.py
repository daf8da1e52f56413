"""API keys: open mode without keys, 401 without a valid key, owners isolated from each other (404)."""

from __future__ import annotations

import uuid

import pytest
from api_support import SPEC

JOB_ROUTES = [
    ("GET", "/jobs/{id}"),
    ("DELETE", "/jobs/{id}"),
    ("POST", "/jobs/{id}/cancel"),
    ("GET", "/jobs/{id}/metrics"),
    ("GET", "/jobs/{id}/events"),
    ("GET", "/jobs/{id}/events/stream"),
    ("GET", "/jobs/{id}/checkpoints"),
    ("GET", "/jobs/{id}/checkpoints/best/download"),
]


def test_key_service(db) -> None:  # noqa: ANN001
    from app.errors import Conflict, NotFound, Unprocessable
    from app.keys.service import authenticate, create_key, hash_secret, list_keys, revoke_key

    with db() as session:
        key, secret = create_key(session, "ci")
        assert key.owner == "ci" and secret.startswith("ft_") and key.prefix == secret[:11]
        assert key.key_hash == hash_secret(secret) and secret not in (key.key_hash, key.prefix)
        other, _ = create_key(session, "laptop", owner="alice")
        assert other.owner == "alice"
        with pytest.raises(Unprocessable):
            create_key(session, "  ")
    with db() as session:
        assert [k.name for k in list_keys(session)] == ["ci", "laptop"]
        found = authenticate(session, secret)
        assert found is not None and found.id == key.id and found.last_used_at is not None
        assert authenticate(session, secret + "x") is None and authenticate(session, "") is None
        assert authenticate(session, "x" * 10_000) is None
    with db() as session:
        revoked = revoke_key(session, key.prefix)
        assert revoked.revoked_at is not None
        assert revoke_key(session, key.id).revoked_at == revoked.revoked_at  # idempotent
        assert authenticate(session, secret) is None
        with pytest.raises(NotFound):
            revoke_key(session, "ft_nothing")
        clash, _ = create_key(session, "clash")
        clash.prefix = other.prefix
        session.flush()
        with pytest.raises(Conflict):
            revoke_key(session, other.prefix)


def test_open_mode_until_the_first_key(client, make_key) -> None:  # noqa: ANN001
    open_job = client.post("/jobs", json=SPEC)
    assert open_job.status_code == 201
    bogus = client.get("/jobs", headers={"Authorization": "Bearer ft_not-a-key"})
    assert bogus.status_code == 401  # a presented key must be valid, even in open mode

    alice = make_key("alice")
    response = client.get("/jobs")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]
    # Jobs made in open mode belong to nobody: alice does not see them.
    assert client.get("/jobs", headers=alice).json()["items"] == []
    assert client.get(f"/jobs/{open_job.json()['id']}", headers=alice).status_code == 404


def test_every_route_needs_a_key_and_owners_are_isolated(client, make_key, db) -> None:  # noqa: ANN001
    from app.keys.service import revoke_key

    alice, bob = make_key("alice"), make_key("bob")
    alice_job = client.post("/jobs", json=SPEC, headers=alice).json()["id"]
    bob_job = client.post("/jobs", json=SPEC, headers=bob).json()["id"]

    for method, path in [("POST", "/jobs"), ("GET", "/jobs"), ("GET", "/datasets"), *JOB_ROUTES]:
        url = path.format(id=alice_job)
        for headers in ({}, {"Authorization": "Bearer ft_wrong"}, {"Authorization": "Basic YWxpY2U6eA=="}):
            response = client.request(method, url, headers=headers, json=SPEC if method == "POST" else None)
            assert response.status_code == 401, (method, url, headers, response.text)
        if path != "/jobs" and path != "/datasets":
            response = client.request(method, url, headers=bob)
            assert response.status_code == 404, (method, url, response.text)

    assert [j["id"] for j in client.get("/jobs", headers=alice).json()["items"]] == [alice_job]
    assert [j["id"] for j in client.get("/jobs", headers=bob).json()["items"]] == [bob_job]
    # Lineage across owners is refused like a missing job.
    stolen = client.post("/jobs", json={**SPEC, "model": {"from_job": alice_job}}, headers=bob)
    assert stolen.status_code == 422
    # The same idempotency key is independent per owner.
    a = client.post("/jobs", json=SPEC, headers={**alice, "Idempotency-Key": "k"}).json()["id"]
    b = client.post("/jobs", json=SPEC, headers={**bob, "Idempotency-Key": "k"}).json()["id"]
    assert a != b
    # alice's own job is fine for alice
    assert client.get(f"/jobs/{alice_job}", headers=alice).status_code == 200
    assert client.post(f"/jobs/{alice_job}/cancel", headers=alice).json()["status"] == "cancelled"

    secret = alice["Authorization"].removeprefix("Bearer ")
    from app.keys.service import hash_secret
    from app.keys.models import ApiKey

    with db() as session:
        key = session.query(ApiKey).filter_by(key_hash=hash_secret(secret)).one()
        revoke_key(session, key.id)
    refused = client.get("/jobs", headers=alice)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_only_health_stays_open(client, make_key) -> None:  # noqa: ANN001
    assert client.get("/openapi.json").status_code == 200  # open mode: everything is open
    alice = make_key("alice")
    assert client.get("/health").json() == {"status": "ok"}
    for path in ("/ready", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=alice).status_code == 200, path
    assert client.get("/redoc").status_code == 404
    schemes = client.get("/openapi.json", headers=alice).json()["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"


def test_unknown_ids_are_404_for_the_owner_too(client, make_key) -> None:  # noqa: ANN001
    alice = make_key("alice")
    for method, path in JOB_ROUTES:
        response = client.request(method, path.format(id=uuid.uuid4()), headers=alice)
        assert response.status_code == 404, (method, path)
