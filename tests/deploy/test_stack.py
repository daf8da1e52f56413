"""The compose stack, run as processes: migrate, api and worker with their compose commands and environment
(see stack.py for the few rewrites an engine would otherwise provide), against this machine's PostgreSQL
and Redis. A job goes through it end to end, with the artifacts on the shared volume or in S3.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import httpx
import pytest
from stack import ComposeStack, wait_job

def _upload_and_train(stack: ComposeStack, http: httpx.Client) -> tuple[dict, dict]:
    rows = [{"x": float(i % 7), "y": float(i % 3), "label": "a" if i % 2 else "b"} for i in range(60)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    uploaded = http.post("/datasets", files={"file": ("points.jsonl", data)})
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    spec = {
        "name": "compose-stack",
        "task": "classification",
        "model": {"builtin": "mlp", "config": {"hidden_sizes": [8], "dropout": 0.0}},
        "data": {"train": dataset["id"], "validation_split": 0.2},
        "hyperparameters": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "compile": False},
    }  # no resources: the default `cpu` queue, which the compose worker consumes
    created = http.post("/jobs", json=spec)
    assert created.status_code == 201, created.text
    job = wait_job(http, created.json()["id"], logs=stack.logs)
    assert job["status"] == "succeeded", (job["error"], stack.logs())
    return dataset, job


def _download(http: httpx.Client, job_id: str) -> dict[str, bytes]:
    with http.stream("GET", f"/jobs/{job_id}/checkpoints/best/download") as response:
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        return {m.name.split("/", 1)[-1]: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


@pytest.mark.parametrize("compose_stack", ["volume"], indirect=True)
def test_compose_stack_runs_a_job_with_a_shared_artifacts_volume(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        assert http.get("/ready").json() == {"database": "ok", "broker": "ok"}
        dataset, job = _upload_and_train(stack, http)
        files = _download(http, job["id"])
    assert "model.safetensors" in files and "config.json" in files
    # api and worker share the `artifacts` volume: the dataset and the checkpoints sit in one folder
    volume = stack.volume_dir("artifacts") / "artifacts"
    assert (volume / "datasets" / dataset["id"] / "data.jsonl").is_file()
    assert (volume / "jobs" / job["id"] / "checkpoints").is_dir()


@pytest.mark.parametrize("compose_stack", ["s3"], indirect=True)
def test_compose_stack_with_s3_keeps_artifacts_in_the_bucket(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        dataset, job = _upload_and_train(stack, http)
        checkpoints = http.get(f"/jobs/{job['id']}/checkpoints").json()
        files = _download(http, job["id"])  # streamed by the API from S3
    bucket, prefix = stack.dotenv["FINETUNE_ARTIFACTS"][len("s3://"):].split("/", 1)
    client = stack.s3.client()  # type: ignore[attr-defined]
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert f"{prefix}/datasets/{dataset['id']}/data.jsonl" in keys
    best = next(c for c in checkpoints if c["id"] == job["result"]["best_checkpoint_id"])
    assert hashlib.sha256(files["model.safetensors"]).hexdigest() == best["sha256"]
    weights = {hashlib.sha256(client.get_object(Bucket=bucket, Key=k)["Body"].read()).hexdigest()
               for k in keys if k.startswith(f"{prefix}/jobs/{job['id']}/checkpoints/") and k.endswith("/model.safetensors")}
    assert best["sha256"] in weights  # the archive the API streamed is the checkpoint in the bucket
    # nothing of the job was kept in the shared volume: S3 is the store
    assert not (stack.volume_dir("artifacts") / "artifacts").exists()
