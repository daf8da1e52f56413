"""With a remote (S3) store, a job requeued onto another machine resumes from its stored checkpoint."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from app.db import session_scope
from app.jobs.models import Checkpoint, Job
from app.settings import get_settings
from app.storage import checkpoint_prefix, get_store
from worker.job_runner import build_run_config

SPEC = {"task": "classification", "model": {"builtin": "mlp"}, "data": {"train": "builtin:digits"}}


def test_a_fresh_machine_fetches_the_newest_checkpoint_before_training(
    settings_env, monkeypatch: pytest.MonkeyPatch, s3_server, bucket: str, tmp_path: Path  # noqa: ANN001
) -> None:
    monkeypatch.setenv("FINETUNE_ARTIFACTS", f"s3://{bucket}/artifacts")
    monkeypatch.setenv("FINETUNE_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("FINETUNE_HOME", str(tmp_path / "other-machine"))
    get_settings.cache_clear()
    settings = get_settings()
    store = get_store(settings.artifacts)
    assert store.local_dir("jobs") is None

    with session_scope() as session:
        job = Job(spec=SPEC, status="running", latest_metrics={})
        session.add(job)
        session.flush()
        for step, payload in ((5, b"old"), (10, b"newest")):
            name = f"step-{step:08d}"
            for file, data in (("model.safetensors", payload), ("config.json", b"{}"), ("training_state.pt", b"s")):
                store.write_stream(f"{checkpoint_prefix(job.id, name)}/{file}", io.BytesIO(data))
            session.add(Checkpoint(job_id=job.id, name=name, step=step, epoch=1.0, metrics={}, size_bytes=10,
                                   sha256="0" * 64, storage_key=checkpoint_prefix(job.id, name)))
        job_id = job.id

    config = build_run_config(job_id, settings, store)
    checkpoints = config.output_dir / "checkpoints"
    assert config.output_dir.is_relative_to(tmp_path / "other-machine")
    # only the newest checkpoint is fetched, complete, under its own name: the core resumes from it
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000010"]
    assert (checkpoints / "step-00000010" / "model.safetensors").read_bytes() == b"newest"
    assert {p.name for p in (checkpoints / "step-00000010").iterdir()} == {
        "model.safetensors", "config.json", "training_state.pt"}
    # a second claim on the same machine keeps the local copy
    build_run_config(job_id, settings, store)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000010"]
