"""The job lease: one claim per job, heartbeats, lost leases, and the reaper's healing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from app.db import session_scope, utcnow
from app.jobs.models import Job, JobEvent
from app.settings import get_settings
from worker.leases import (
    claim_job,
    find_stale_queued,
    finish_job,
    new_lease_owner,
    reap_expired_leases,
    renew_lease,
)


def _job(job_id: str) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id)


def _events(job_id: str) -> list[str]:
    with session_scope() as session:
        return list(session.execute(select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).scalars())


def _expire(job_id: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def test_a_job_is_claimed_once(make_job) -> None:
    job_id = make_job()
    first = claim_job(job_id, new_lease_owner(), get_settings())
    assert first is not None and first.attempt == 1
    assert claim_job(job_id, new_lease_owner(), get_settings()) is None  # a redelivered message
    job = _job(job_id)
    assert job.status == "running" and job.attempts == 1 and job.lease_owner == first.owner
    assert job.started_at is not None and job.lease_expires_at > utcnow()
    assert _events(job_id) == ["claimed"]


def test_finished_cancelled_or_missing_jobs_are_not_claimed(make_job) -> None:
    settings = get_settings()
    for status in ("succeeded", "failed", "cancelled"):
        assert claim_job(make_job(status=status), new_lease_owner(), settings) is None
    assert claim_job(make_job(cancel_requested=True), new_lease_owner(), settings) is None
    assert claim_job("00000000-0000-0000-0000-000000000000", new_lease_owner(), settings) is None


def test_an_expired_lease_can_be_taken_over_and_the_old_owner_cannot_finish(make_job) -> None:
    settings = get_settings()
    job_id = make_job()
    old = claim_job(job_id, new_lease_owner(), settings)
    _expire(job_id)
    new = claim_job(job_id, new_lease_owner(), settings)
    assert new is not None and new.attempt == 2
    assert renew_lease(old, settings) == (False, False)
    assert not finish_job(old, "succeeded", event_type="succeeded", event_message="x")
    assert renew_lease(new, settings) == (True, False)
    assert finish_job(new, "succeeded", result={"ok": 1}, event_type="succeeded", event_message="done")
    job = _job(job_id)
    assert job.status == "succeeded" and job.lease_owner is None and job.lease_expires_at is None
    assert job.result == {"ok": 1}


def test_heartbeat_reports_cancellation(make_job) -> None:
    settings = get_settings()
    job_id = make_job()
    claim = claim_job(job_id, new_lease_owner(), settings)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    assert renew_lease(claim, settings) == (True, True)


def test_reaper_requeues_expired_jobs_then_fails_after_max_attempts(make_job) -> None:
    settings = get_settings()
    job_id = make_job(max_attempts=2)
    claim_job(job_id, new_lease_owner(), settings)
    assert reap_expired_leases(settings) == []  # a live lease is left alone
    _expire(job_id)
    assert reap_expired_leases(settings) == [(job_id, "cpu")]
    job = _job(job_id)
    assert job.status == "queued" and job.attempts == 1 and job.lease_owner is None
    assert claim_job(job_id, new_lease_owner(), settings).attempt == 2
    _expire(job_id)
    assert reap_expired_leases(settings) == []
    job = _job(job_id)
    assert job.status == "failed" and job.error_type == "lease_expired" and "2 of 2 attempts" in job.error_message
    assert _events(job_id) == ["claimed", "requeued", "claimed", "failed"]


def test_reaper_reenqueues_queued_jobs_without_a_message(make_job) -> None:
    from worker.celery_app import enqueue_job

    settings = get_settings()
    old = utcnow() - timedelta(hours=1)
    lost = make_job(created_at=old, updated_at=old)
    waiting = make_job(created_at=old, updated_at=old)
    fresh = make_job()
    enqueue_job(waiting, "cpu", settings)  # its message is still in the broker
    assert find_stale_queued(settings) == [(lost, "cpu")]
    assert find_stale_queued(settings) == []  # touched: not again until the period passes
    assert fresh and "requeued" in _events(lost)
