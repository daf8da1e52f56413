"""The application as a whole: no torch in the API process, outages as 503, hostile paths, the schema."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_the_api_process_does_not_import_torch() -> None:
    code = "import sys, app.main; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_database_outage_is_503_and_ready_says_which(tmp_path) -> None:  # noqa: ANN001
    from app.main import create_app
    from app.settings import Settings

    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nothing"
    with TestClient(create_app(Settings(home=tmp_path, database_url=url))) as client:
        from api_support import SPEC

        for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/x/events"), ("GET", "/datasets")):
            response = client.request(method, path, json=SPEC if method == "POST" else None)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "5"
            assert response.json()["detail"].startswith("database unavailable")
        assert client.get("/health").status_code == 200  # liveness needs no database
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["database"].startswith("unavailable") and ready.json()["broker"] == "ok"


def test_ready_reports_a_down_broker(settings, client) -> None:  # noqa: ANN001
    assert client.get("/ready").json() == {"database": "ok", "broker": "ok"}
    client.app.state.settings = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["database"] == "ok" and ready.json()["broker"].startswith("unavailable")


def test_ready_with_redis(settings, client, redis_url) -> None:  # noqa: ANN001
    client.app.state.settings = settings.model_copy(update={"broker_url": redis_url})
    assert client.get("/ready").json() == {"database": "ok", "broker": "ok"}


def test_enqueue_failure_keeps_the_job_queued(settings, client) -> None:  # noqa: ANN001
    client.app.state.settings = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    from api_support import SPEC

    response = client.post("/jobs", json=SPEC)
    assert response.status_code == 201 and response.json()["status"] == "queued"
    events = client.get(f"/jobs/{response.json()['id']}/events").json()
    assert [(e["type"], e["level"]) for e in events] == [("created", "info"), ("enqueue_failed", "warning")]


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/..",
        "/jobs/..%2F..%2Fetc%2Fpasswd",
        "/jobs/%2e%2e",
        "/jobs/%00",
        "/jobs/a%00b",
        "/jobs/" + "9" * 5000,
        "/jobs/%C3%28",
        "/jobs/00000000-0000-0000-0000-000000000000/checkpoints/..%2F..%2Fjobs/download",
        "/jobs/00000000-0000-0000-0000-000000000000/checkpoints/%00/download",
        "/jobs/../../etc/passwd",
    ],
)
def test_hostile_paths_are_404_never_500(client, path) -> None:  # noqa: ANN001
    response = client.get(path)
    assert response.status_code in (404, 405, 422), (path, response.status_code, response.text)


def test_hostile_query_and_header_values(client) -> None:  # noqa: ANN001
    from api_support import SPEC

    assert client.get("/jobs", params={"cursor": "\x00"}).status_code == 422
    assert client.post("/jobs", json=SPEC, headers={"Idempotency-Key": "a b"}).status_code == 422
    big = {**SPEC, "name": "x" * 201}
    assert client.post("/jobs", json=big).status_code == 422
    nul = {**SPEC, "data": {"train": "builtin:digits", "text_field": "a\x00b"}}
    assert client.post("/jobs", json=nul).status_code in (201, 422)


def test_openapi_documents_the_contract(client) -> None:  # noqa: ANN001
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/jobs"]["post"]
    body = post["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/JobSpec")
    example = body["examples"]["digits-mlp"]["value"]
    assert example["model"]["builtin"] == "mlp"
    assert {"200", "201", "401", "409", "422", "429"} <= set(post["responses"])
    assert "Idempotency-Key" in [p["name"] for p in post["parameters"]]
    download = schema["paths"]["/jobs/{job_id}/checkpoints/{checkpoint_id}/download"]["get"]
    assert "application/x-tar" in download["responses"]["200"]["content"]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            assert any(code.startswith("2") for code in operation["responses"]), (method, path)
    # The documented example is a valid spec that the API accepts.
    assert client.post("/jobs", json=example).status_code == 201
