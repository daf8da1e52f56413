"""Celery tasks: thin wrappers that take a job id and hand it to the job runner."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="finetune.run_job", ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> None:
    """Claim and run one job; a message for a job that is not claimable is a no-op."""
    from worker.job_runner import run_claimed_job

    run_claimed_job(job_id)
