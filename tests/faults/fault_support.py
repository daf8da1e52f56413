"""Helpers of the fault tests (a uniquely named module: every conftest is named `conftest`)."""

from __future__ import annotations

from typing import Any


def count(stack: Any, job_id: str, type_: str) -> int:
    return sum(1 for e in stack.events(job_id) if e["type"] == type_)


def worker_pid(stack: Any, job_id: str) -> int:
    """The pid of the pool process running a job (from its lease owner, host:pid:nonce)."""
    claimed = [e for e in stack.events(job_id) if e["type"] == "claimed"]
    return int(claimed[-1]["data"]["worker"].split(":")[1])
