"""Checkpoint files are never unpickled: a `training_state.pt` carrying a payload (resume) and a
`model.safetensors` that is really a pickle (model.from_job) each fail the job with a clear error, and the
payload never runs (the marker file it would create does not exist). The real job runner, database and
files; the runner is called in-process instead of through Celery to keep it quick."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import torch

from security_support import SPEC

RESUMABLE = {**SPEC, "hyperparameters": {"epochs": 1, "max_steps": 6, "batch_size": 32, "compile": False,
                                         "checkpoint_every_steps": 3}}


class Payload:
    """Unpickling this creates the marker file: proof that a loader executed code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


def _run(job_id: str) -> dict:
    from app.db import session_scope
    from app.jobs.models import Job
    from worker.job_runner import run_claimed_job

    run_claimed_job(job_id)
    with session_scope() as session:
        job = session.get(Job, job_id)
        return {"status": job.status, "type": job.error_type, "message": job.error_message or ""}


def _checkpoints(settings, job_id: str) -> Path:  # noqa: ANN001
    return Path(settings.artifacts) / "jobs" / job_id / "checkpoints"


def test_planted_pickles_are_refused_and_never_executed(client, settings, tmp_path) -> None:  # noqa: ANN001
    marker = tmp_path / "PWNED"
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Payload(live))).close()  # the payload is real: a plain unpickle runs it
    assert live.exists()
    base = client.post("/jobs", json=RESUMABLE).json()["id"]
    assert _run(base)["status"] == "succeeded"
    first = sorted(_checkpoints(settings, base).iterdir())[0]
    assert (first / "training_state.pt").is_file()

    # resume: the same job's output holds a checkpoint whose training state carries a payload
    resumed = client.post("/jobs", json=RESUMABLE).json()["id"]
    planted = _checkpoints(settings, resumed) / first.name
    shutil.copytree(first, planted)
    torch.save({"step": 3, "optimizer": Payload(marker)}, planted / "training_state.pt")
    outcome = _run(resumed)
    assert outcome["status"] == "failed" and "weights only" in outcome["message"].lower(), outcome
    assert not marker.exists()

    # a raw pickle (not even torch's zip format) as the training state
    again = client.post("/jobs", json=RESUMABLE).json()["id"]
    planted = _checkpoints(settings, again) / first.name
    shutil.copytree(first, planted)
    (planted / "training_state.pt").write_bytes(pickle.dumps(Payload(marker)))
    outcome = _run(again)
    assert outcome["status"] == "failed", outcome
    assert not marker.exists()

    # transfer learning from a checkpoint whose weights file is a pickle
    for checkpoint in _checkpoints(settings, base).iterdir():
        (checkpoint / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    child = client.post("/jobs", json={**RESUMABLE, "model": {"from_job": base, "checkpoint": "last"}})
    assert child.status_code == 201, child.text
    outcome = _run(child.json()["id"])
    assert outcome["status"] == "failed" and "deserializ" in outcome["message"].lower(), outcome
    assert not marker.exists()
