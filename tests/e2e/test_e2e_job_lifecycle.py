"""A user's whole path over HTTP with a real worker: submit, train, read curves and events, download, reuse."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import torch

from worker.training.data import prepare_data
from worker.training.inference import load_for_inference
from worker.training.spec import JobSpec
from worker.training.tasks import split_batch


def _download(stack, job_id: str, checkpoint: str, into: Path) -> Path:  # noqa: ANN001
    response = stack.http.get(f"/jobs/{job_id}/checkpoints/{checkpoint}/download")
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
        archive.extractall(into, filter="data")
    [folder] = [p for p in into.iterdir() if p.is_dir()]
    return folder


def test_builtin_job_trains_reports_and_downloads(stack, tmp_path: Path) -> None:  # noqa: ANN001
    submitted = stack.submit(stack.spec(name="digits-e2e"))
    assert submitted["status"] == "queued"
    seen = {stack.wait(submitted["id"], until=("running", "succeeded"))["status"]}
    job = stack.wait(submitted["id"])
    seen.add(job["status"])
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1 and job["started_at"] and job["finished_at"]
    total = job["progress"]["total_steps"]
    assert job["progress"]["step"] == total and total > 0

    # one loss point per logged step, and the loss goes down
    series = stack.http.get(f"/jobs/{job['id']}/metrics", params={"names": "train_loss"}).json()["series"]
    steps = [s for s, _ in series["train_loss"]]
    assert steps == list(range(1, total + 1))
    losses = [v for _, v in series["train_loss"]]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5

    types = [e["type"] for e in stack.events(job["id"])]
    for expected in ("claimed", "started", "device", "trainable_parameters", "evaluation", "finished"):
        assert expected in types, types
    assert types.count("started") == 1 and types[-1] == "succeeded"

    # the best checkpoint's weights, rebuilt by the core's loader, give the accuracy the job reported
    checkpoints = stack.http.get(f"/jobs/{job['id']}/checkpoints").json()
    best = next(c for c in checkpoints if c["id"] == job["result"]["best_checkpoint_id"])
    folder = _download(stack, job["id"], "best", tmp_path)
    from safetensors.torch import load_file

    assert load_file(folder / "model.safetensors")
    model, _ = load_for_inference(folder)
    val = prepare_data(JobSpec.model_validate(job["spec"]), {}, "vector").val
    inputs, labels = split_batch(val)
    with torch.no_grad():
        accuracy = (model(**inputs).argmax(-1) == labels).float().mean().item()
    assert abs(accuracy - best["metrics"]["val_accuracy"]) < 1e-6
    assert accuracy > 0.8

    # transfer learning: a new job starts from these weights
    transfer = stack.submit(stack.spec(model={"from_job": job["id"], "checkpoint": "best"},
                                       hyperparameters={"epochs": 1}))
    done = stack.wait(transfer["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["base_checkpoint_id"] == best["id"]
    events = stack.events(transfer["id"])
    assert any(e["type"] == "base_model_loaded" for e in events)
    first = stack.http.get(f"/jobs/{transfer['id']}/metrics", params={"names": "train_loss"}).json()["series"]
    assert first["train_loss"][0][1] < 0.5 * losses[0]  # it starts trained, not from scratch


def test_a_spec_that_fails_deeper_validation_ends_failed_with_a_reason(stack) -> None:  # noqa: ANN001
    job = stack.submit(stack.spec(freeze={"patterns": ["encoder.nothing.*"]}))
    done = stack.wait(job["id"])
    assert done["status"] == "failed"
    assert done["error"]["type"] == "invalid_config"
    assert "encoder.nothing.*" in done["error"]["message"] and "matches no parameter" in done["error"]["message"]
    assert stack.events(job["id"])[-1]["type"] == "failed"


def test_cancel_a_queued_and_a_running_job(stack) -> None:  # noqa: ANN001
    long = stack.submit(stack.spec(hyperparameters={"epochs": 500}))
    stack.wait(long["id"], until=("running",), check=lambda j: j["progress"]["step"] > 0)
    waiting = stack.submit(stack.spec())
    response = stack.http.post(f"/jobs/{waiting['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert stack.http.post(f"/jobs/{long['id']}/cancel").status_code == 200
    done = stack.wait(long["id"], timeout=30)
    assert done["status"] == "cancelled"
    assert done["progress"]["step"] < done["progress"]["total_steps"]
    assert stack.job(waiting["id"])["attempts"] == 0  # never ran
    # the worker is free again
    after = stack.wait(stack.submit(stack.spec(hyperparameters={"max_steps": 2}))["id"])
    assert after["status"] == "succeeded"
