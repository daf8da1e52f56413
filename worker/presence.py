"""The worker's presence row: its queues and a heartbeat every FINETUNE_LEASE_SECONDS / 4, removed at
shutdown. The API reads it for GET /workers and to warn about jobs on a queue no live worker consumes."""

from __future__ import annotations

import logging
import os
import socket
import threading

from app.db import session_scope, utcnow
from app.settings import Settings, get_settings
from app.workers import service

log = logging.getLogger(__name__)


class Presence(threading.Thread):
    def __init__(self, name: str, queues: list[str], concurrency: int, settings: Settings | None = None) -> None:
        super().__init__(name="finetune-presence", daemon=True)
        self.settings = settings or get_settings()
        self.worker_name, self.queues, self.concurrency = name, queues, concurrency
        self.started_at = utcnow()
        self._stop_event = threading.Event()

    def beat(self) -> None:
        with session_scope() as session:
            service.record_heartbeat(session, name=self.worker_name, hostname=socket.gethostname(), pid=os.getpid(),
                                     queues=self.queues, concurrency=self.concurrency, started_at=self.started_at)

    def start(self) -> None:
        self._beat_logged()  # the first beat before "ready": a job posted right after sees this worker
        super().start()

    def _beat_logged(self) -> None:
        try:
            self.beat()
        except Exception:  # a database outage: the next beat retries; jobs are unaffected
            log.warning("worker presence heartbeat failed", exc_info=True)

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.heartbeat_seconds):
            self._beat_logged()

    def stop(self) -> None:
        self._stop_event.set()
        try:
            with session_scope() as session:
                service.remove(session, self.worker_name)
        except Exception:  # gone for good: the row stops counting as live after three heartbeats
            log.warning("could not remove worker %s's presence row", self.worker_name, exc_info=True)
