"""Predictions a predictor never answered do not stay pending forever."""

from __future__ import annotations

from datetime import timedelta

from app.db import utcnow
from app.jobs.models import Checkpoint
from app.predictions.models import Prediction
from api_support import SPEC


def test_a_prediction_nobody_answered_fails_after_the_timeout(client, db, settings, finish_job) -> None:  # noqa: ANN001
    job_id = client.post("/jobs", json=SPEC).json()["id"]
    finish_job(job_id, "succeeded")
    with db() as session:
        checkpoint = Checkpoint(job_id=job_id, name="step-00000001", step=1, epoch=1.0, metrics={}, size_bytes=1,
                                sha256="0" * 64, storage_key=f"jobs/{job_id}/checkpoints/step-00000001")
        session.add(checkpoint)
        session.flush()
        old = Prediction(job_id=job_id, checkpoint_id=checkpoint.id, status="running", inputs=[[0.0]],
                         created_at=utcnow() - timedelta(seconds=settings.prediction_timeout_seconds + 5))
        fresh = Prediction(job_id=job_id, checkpoint_id=checkpoint.id, status="queued", inputs=[[0.0]])
        session.add_all([old, fresh])
        session.flush()
        old_id, fresh_id = old.id, fresh.id

    pending = client.get(f"/jobs/{job_id}/predictions/{fresh_id}")
    assert pending.status_code == 202 and pending.json()["status"] == "queued"

    expired = client.get(f"/jobs/{job_id}/predictions/{old_id}")
    assert expired.status_code == 200
    body = expired.json()
    assert body["status"] == "failed"
    assert body["error"]["type"] == "timed_out" and "predict queue" in body["error"]["message"]
    with db() as session:
        assert session.get(Prediction, old_id).status == "failed"
