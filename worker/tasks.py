"""Celery tasks and worker-process hooks.

`run_job` takes a job id and hands it to the job runner, which claims the job row first: a redelivered or
duplicated message for a job that is running elsewhere, finished or cancelled does nothing.

Each worker's main process runs the reaper as a thread (worker.leases.Reaper): whenever any worker is up,
jobs of dead workers are requeued, with no extra process to deploy (the embedded default heals too).
"""

from __future__ import annotations

import logging
import os
import signal

from celery import shared_task
from celery.signals import worker_process_init, worker_ready, worker_shutdown, worker_shutting_down

from worker import shutdown

log = logging.getLogger(__name__)
_reaper = None
_presence = None


@shared_task(name="finetune.run_job", ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> None:
    """Claim and run one job; a message for a job that is not claimable is a no-op."""
    from worker.job_runner import run_claimed_job

    run_claimed_job(job_id)


@worker_process_init.connect
def _init_pool_process(**_: object) -> None:
    # A forked child must not share the parent's database connections: drop them without closing
    # (closing would end the parent's sessions), then build engines lazily in this process.
    from app.db import get_engine, reset_engines

    get_engine().dispose(close=False)
    reset_engines()
    # SIGTERM to a pool process stops its job at the next step and requeues it (see worker.shutdown).
    signal.signal(signal.SIGTERM, shutdown.handle_sigterm)


@worker_ready.connect
def _start_reaper(sender: object = None, **_: object) -> None:
    global _reaper, _presence
    from worker.leases import Reaper
    from worker.presence import Presence

    _reaper = Reaper()
    _reaper.start()
    log.info("reaper started (every %.1f s)", _reaper.interval)
    if sender is not None:  # the consumer: its node name, the queues it consumes, its pool size
        queues = sorted(sender.app.amqp.queues.consume_from)
        _presence = Presence(sender.hostname, queues, getattr(sender.controller, "concurrency", 1) or 1)
        _presence.start()


@worker_shutting_down.connect
def _stop_running_jobs(**_: object) -> None:
    # A warm shutdown would wait for a training run to end (hours): ask the pool processes to stop their
    # jobs now instead; each job is requeued and resumes from its last checkpoint on the next worker.
    from billiard.process import active_children

    for child in active_children():
        try:
            os.kill(child.pid, signal.SIGTERM)
        except (ProcessLookupError, TypeError):
            pass


@worker_shutdown.connect
def _stop_reaper(**_: object) -> None:
    if _reaper is not None:
        _reaper.stop()
    if _presence is not None:
        _presence.stop()
