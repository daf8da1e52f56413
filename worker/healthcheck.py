"""A worker liveness check that works with every broker: a heartbeat file.

The worker's main process touches FINETUNE_WORKER_HEARTBEAT_FILE every few seconds from its own timer (the
same event loop that consumes messages), so a stale file means a hung or dead consumer. Training runs in
the pool's child process, so a long job never delays the heartbeat. Checking costs one stat() — unlike
`celery inspect ping`, which needs a broadcast the filesystem broker does not have.

    python -m worker.healthcheck --max-age 90      # exit 0 when fresh (the image's HEALTHCHECK)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps

ENV = "FINETUNE_WORKER_HEARTBEAT_FILE"
INTERVAL_SECONDS = 10.0


def heartbeat_path() -> Path | None:
    value = os.environ.get(ENV, "").strip()
    return Path(value) if value else None


class HeartbeatFile(bootsteps.StartStopStep):
    """Touch the heartbeat file from the worker's timer while the worker runs; remove it on shutdown."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.path = heartbeat_path()
        self.tref = None

    def start(self, worker: Any) -> None:
        if self.path is None:
            return
        self.beat()
        self.tref = worker.timer.call_repeatedly(INTERVAL_SECONDS, self.beat, priority=10)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def beat(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            self.path.touch()  # type: ignore[union-attr]
        except OSError:  # a full /tmp must not kill the worker; the check then reports it unhealthy
            pass


def install(celery: Celery) -> None:
    """Add the heartbeat step to a Celery app's worker (a no-op unless the env variable names a file)."""
    celery.steps["worker"].add(HeartbeatFile)


def check(path: Path | None, max_age: float) -> str | None:
    """None when healthy, else the reason."""
    if path is None:
        return f"{ENV} is not set"
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat at {path} (worker not started, or stopped)"
    if age > max_age:
        return f"heartbeat at {path} is {age:.0f} s old (more than {max_age:.0f} s): the worker is hung"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when the worker's heartbeat file is fresh.")
    parser.add_argument("--max-age", type=float, default=90.0, help="seconds since the last heartbeat")
    parser.add_argument("--file", type=Path, default=None, help=f"heartbeat file (default ${ENV})")
    args = parser.parse_args(argv)
    problem = check(args.file or heartbeat_path(), args.max_age)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
