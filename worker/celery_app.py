"""The Celery app, configured from Settings; torch-free so the API can import it to enqueue.

The broker is Redis (`redis://...`) or, in the embedded default, kombu's filesystem transport: message files
in a folder under FINETUNE_HOME, so nothing needs to be installed. Either way a task carries only a job id;
the job row (and its lease) is the truth, so a lost or duplicated message can never lose or double-run a job.

`celery -A worker.celery_app worker` finds `app` here; the app is built lazily from the current settings
(tests change settings between cases, and importing this module must not touch the broker).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from app.settings import Settings, get_settings

RUN_JOB_TASK = "finetune.run_job"

_lock = threading.Lock()
_apps: dict[tuple[Any, ...], Celery] = {}


def filesystem_folders(settings: Settings) -> dict[str, Path]:
    """The embedded broker's folders: one message folder (producer and consumer share it), processed, control."""
    base = settings.broker_dir
    return {
        "data_folder_in": base / "messages",
        "data_folder_out": base / "messages",
        "processed_folder": base / "processed",
        "control_folder": base / "control",
    }


def is_filesystem_broker(broker_url: str) -> bool:
    return broker_url.startswith("filesystem://")


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    if is_filesystem_broker(settings.broker_url):
        folders = filesystem_folders(settings)
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            **{name: str(path) for name, path in folders.items()},
            # kombu polls the folder; its default of 1 s would add up to a second to every job's start.
            "polling_interval": settings.broker_polling_interval,
        }
    if settings.broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        # An unacked message comes back after this; the job lease guards against a double run anyway.
        return {"visibility_timeout": settings.broker_visibility_timeout}
    return {}


def create_celery_app(settings: Settings) -> Celery:
    celery = Celery("finetune", broker=settings.broker_url, include=["worker.tasks", "worker.predict"])
    if is_filesystem_broker(settings.broker_url):
        celery.conf.broker_transport = "worker.fs_transport:Transport"  # atomic writes and takes
    celery.conf.update(
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # retry forever: a worker outlives a broker restart
        broker_channel_error_retry=True,
        # A publish from the API must not hang a request when the broker is down: a few quick retries, then
        # the API reports it; the reaper re-enqueues jobs left queued without a message.
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_default_queue=settings.default_queue,
        task_create_missing_queues=True,
        task_track_started=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
        timezone="UTC",
    )
    from worker.healthcheck import install as install_heartbeat

    install_heartbeat(celery)  # container liveness: a heartbeat file (FINETUNE_WORKER_HEARTBEAT_FILE)
    return celery


def _key(settings: Settings) -> tuple[Any, ...]:
    return (settings.broker_url, str(settings.broker_dir), settings.broker_polling_interval,
            settings.broker_visibility_timeout, settings.default_queue)


def get_celery_app(settings: Settings | None = None) -> Celery:
    """The Celery app for these settings (default: the current ones), built once per configuration."""
    settings = settings or get_settings()
    key = _key(settings)
    with _lock:
        celery = _apps.get(key)
        if celery is None:
            celery = _apps[key] = create_celery_app(settings)
            import worker.predict  # noqa: F401  (POST /jobs/{id}/predict: the finetune.predict task)
            import worker.tasks  # noqa: F401  (registers the shared task on every app)
        return celery


def __getattr__(name: str) -> Any:
    # `celery -A worker.celery_app` looks up `app` (or `celery`); build it on first use, not at import.
    if name in ("app", "celery"):
        return get_celery_app()
    raise AttributeError(name)


def enqueue_job(job_id: str, queue: str, settings: Settings | None = None) -> None:
    """Send the run_job message for a committed job. Raises when the broker cannot be reached."""
    celery = get_celery_app(settings)
    # The task id starts with the job id, so pending messages can be matched to jobs (see leases.py).
    celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, task_id=f"{job_id}.{uuid.uuid4().hex[:8]}")


def broker_ping(timeout: float = 2.0, settings: Settings | None = None) -> None:
    """Raise when the broker is unreachable (readiness): folders writable, or a Redis PING answered."""
    settings = settings or get_settings()
    url = settings.broker_url
    if is_filesystem_broker(url):
        for folder in filesystem_folders(settings).values():
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".ping-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        return
    if url.startswith(("redis://", "rediss://", "redis+socket://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return
    # Any other kombu transport: open and close a connection within the timeout.
    with get_celery_app(settings).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
