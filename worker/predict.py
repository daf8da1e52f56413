"""The `finetune.predict` task: run a checkpoint on a prediction row's inputs and store the outputs.

It runs on the predict queue (Settings.predict_queue), on a worker of its own, so it never waits behind a
training run. The last loaded checkpoint stays in memory (one per worker process): trying a model several
times loads it once. Torch is imported only when a prediction runs.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from celery import shared_task
from sqlalchemy import update

from app.db import session_scope, utcnow
from app.jobs.models import Checkpoint
from app.predictions.models import Prediction
from app.settings import Settings, get_settings
from app.storage import get_store

log = logging.getLogger(__name__)
_lock = threading.Lock()
_cached: tuple[tuple[str, str], Any] | None = None  # ((checkpoint id, sha256), Predictor)


@shared_task(name="finetune.predict", ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def predict(prediction_id: str) -> None:
    run_prediction(prediction_id)


def _claim(prediction_id: str) -> dict[str, Any] | None:
    with session_scope() as session:
        claimed = session.execute(update(Prediction).where(Prediction.id == prediction_id,
                                                           Prediction.status == "queued").values(status="running"))
        if claimed.rowcount != 1:
            return None
        row = session.get(Prediction, prediction_id)
        checkpoint = session.get(Checkpoint, row.checkpoint_id)
        return {"inputs": row.inputs, "parameters": dict(row.parameters or {}),
                "checkpoint": None if checkpoint is None else
                (checkpoint.id, checkpoint.sha256, checkpoint.storage_key)}


def _finish(prediction_id: str, **values: Any) -> None:
    with session_scope() as session:
        session.execute(update(Prediction).where(Prediction.id == prediction_id).values(finished_at=utcnow(), **values))


def _predictor(checkpoint: tuple[str, str, str], settings: Settings) -> Any:
    global _cached
    checkpoint_id, sha256, key = checkpoint
    if _cached is not None and _cached[0] == (checkpoint_id, sha256):
        return _cached[1]
    from worker.training.inference import Predictor

    store = get_store(settings.artifacts)
    local = store.local_dir(key)
    if local is None:  # a remote store: one local copy per checkpoint, replaced by the next one
        cache = settings.home / "predict-cache"
        shutil.rmtree(cache, ignore_errors=True)
        local = store.download_dir(key, cache / checkpoint_id)
    _cached = None  # free the previous model before loading the next
    predictor = Predictor(Path(local))
    _cached = ((checkpoint_id, sha256), predictor)
    return predictor


def run_prediction(prediction_id: str, settings: Settings | None = None) -> str | None:
    """Run one queued prediction; returns its final status, or None when it was not ours to run."""
    settings = settings or get_settings()
    job = _claim(prediction_id)
    if job is None:
        log.info("prediction %s is not queued (done, taken or deleted); skipping", prediction_id)
        return None
    if job["checkpoint"] is None:
        _finish(prediction_id, status="failed", error_type="not_found", error="the checkpoint no longer exists")
        return "failed"
    params = job["parameters"]
    try:
        with _lock:  # one model in memory per process, one prediction at a time
            predictor = _predictor(job["checkpoint"], settings)
            outputs = predictor.predict(job["inputs"], max_new_tokens=int(params.get("max_new_tokens", 32)),
                                        temperature=float(params.get("temperature", 0.0)))
    except (ValueError, TypeError) as exc:  # inputs that do not fit the model: the message says which
        _finish(prediction_id, status="failed", error_type="invalid_input", error=str(exc) or type(exc).__name__)
        return "failed"
    except Exception as exc:  # a readable failure, never a prediction left running
        log.exception("prediction %s failed", prediction_id)
        _finish(prediction_id, status="failed", error_type=type(exc).__name__, error=str(exc)[:2000] or type(exc).__name__)
        return "failed"
    _finish(prediction_id, status="succeeded", outputs=outputs)
    return "succeeded"
