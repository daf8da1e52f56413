"""The SQL reporter: batched, resumable metrics; progress; events; one best checkpoint per job."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.db import session_scope
from app.jobs.models import Checkpoint, Job, JobEvent, MetricPoint
from app.settings import get_settings
from worker.db_reporter import DbReporter
from worker.training.reporting import CheckpointInfo, Reporter


def _points(job_id: str) -> list[tuple[str, int, float]]:
    with session_scope() as session:
        rows = session.execute(
            select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
            .where(MetricPoint.job_id == job_id).order_by(MetricPoint.name, MetricPoint.step)
        ).all()
    return [tuple(r) for r in rows]


def _info(name: str, step: int, **kw) -> CheckpointInfo:
    return CheckpointInfo(name=name, path=Path("/nonexistent"), step=step, epoch=step / 10, metrics={"val_loss": 1 / step},
                          size_bytes=10, sha256="0" * 64, **kw)


def test_metrics_are_batched_and_a_resumed_run_overwrites(make_job) -> None:
    job_id = make_job()
    reporter = DbReporter(job_id, get_settings().model_copy(update={"metrics_flush_seconds": 3600}))
    assert isinstance(reporter, Reporter)
    for step in range(1, 6):
        reporter.metrics(step, {"train_loss": 1.0 / step})
        reporter.progress(step, 10, step / 5)
    assert _points(job_id) == []  # buffered: no transaction per step
    reporter.close()
    assert [p[1] for p in _points(job_id)] == [1, 2, 3, 4, 5]
    # a run resumed from step 3 logs steps 4.. again: overwritten, never duplicated
    resumed = DbReporter(job_id, get_settings())
    for step in range(4, 8):
        resumed.metrics(step, {"train_loss": 10.0 + step})
    resumed.close()
    points = _points(job_id)
    assert [p[1] for p in points] == [1, 2, 3, 4, 5, 6, 7]
    assert points[3][2] == 14.0
    with session_scope() as session:
        job = session.get(Job, job_id)
    assert (job.progress_step, job.progress_total_steps, job.progress_epoch) == (5, 10, 1.0)
    assert job.latest_metrics == {"train_loss": 17.0}


def test_checkpoints_rows_one_best_and_removal(make_job) -> None:
    job_id = make_job()
    reporter = DbReporter(job_id, get_settings())
    reporter.checkpoint_saved(_info("step-00000010", 10, is_best=True))
    reporter.checkpoint_saved(_info("step-00000020", 20, is_best=True))
    reporter.checkpoint_saved(_info("step-00000030", 30))
    reporter.checkpoint_saved(_info("step-00000030", 30, is_final=True))  # resumed: same name again
    reporter.checkpoint_removed("step-00000010")
    reporter.event("info", "evaluation", "val_loss 0.5", {"val_loss": 0.5})
    with session_scope() as session:
        rows = session.execute(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)).scalars().all()
        events = session.execute(select(JobEvent).where(JobEvent.job_id == job_id)).scalars().all()
    assert [(r.name, r.is_best, r.is_final) for r in rows] == [("step-00000020", True, False), ("step-00000030", False, True)]
    assert rows[0].storage_key == f"jobs/{job_id}/checkpoints/step-00000020"
    assert [(e.type, e.data) for e in events] == [("evaluation", {"val_loss": 0.5})]
