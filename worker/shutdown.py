"""Stopping a pool process politely: a SIGTERM during a job stops training at the next step.

The job runner then hands the job back (queued, lease cleared, message re-sent), so the next worker resumes
it from its last checkpoint at once instead of waiting for the lease to expire. Outside a job, SIGTERM keeps
its default meaning (exit), so the pool can still terminate idle processes.
"""

from __future__ import annotations

import os
import signal
import threading

_requested = threading.Event()
_in_job = threading.Event()


def requested() -> bool:
    return _requested.is_set()


def handle_sigterm(signum: int, frame: object) -> None:  # noqa: ARG001
    _requested.set()
    if not _in_job.is_set():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


class running_job:
    """Marks the process busy with a job (so SIGTERM stops the job rather than the process)."""

    def __enter__(self) -> None:
        _in_job.set()

    def __exit__(self, *exc: object) -> None:
        _in_job.clear()
