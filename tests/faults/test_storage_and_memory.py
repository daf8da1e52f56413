"""A full disk and an allocation that cannot fit, for real:

- Full disk: once the job's first checkpoint is written, the kernel's file-size limit (RLIMIT_FSIZE, set
  on the pool process running the job with prlimit) makes every further write past a few kilobytes fail
  with EFBIG, as a full disk or a quota would (ENOSPC/EDQUOT). It needs no privileges, unlike a tiny
  tmpfs. PostgreSQL holds the rows, so only the artifact store is hit. The job fails with that reason and
  the earlier checkpoint stays listed, whole and downloadable.
- Out of memory: a spec whose token embedding needs 65 GB; the worker runs under an address-space limit
  (RLIMIT_AS), so the allocation fails on any machine instead of paging it to death. The job fails with
  advice, and the same worker runs the next job.
"""

from __future__ import annotations

import hashlib
import io
import resource
import tarfile
from pathlib import Path

from fault_support import worker_pid

FILE_LIMIT = 4096  # smaller than a checkpoint's weights, larger than nothing
ADDRESS_SPACE = 16 << 30


def _process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for child in children for p in _process_tree(int(child)))]


def test_a_full_disk_fails_the_job_with_the_reason_and_keeps_earlier_checkpoints(postgres_stack, redis_url) -> None:  # noqa: ANN001
    stack = postgres_stack(redis_url)
    stack.start_worker()
    job = stack.submit(stack.spec(hyperparameters={"epochs": 50, "max_steps": 400, "batch_size": 16,
                                                   "checkpoint_every_steps": 20}))
    stack.wait(job["id"], until=("running",), timeout=120,
               check=lambda j: bool(stack.http.get(f"/jobs/{j['id']}/checkpoints").json()))
    pid = worker_pid(stack, job["id"])
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (FILE_LIMIT, hard))  # the soft limit: no privilege needed
    kept = stack.http.get(f"/jobs/{job['id']}/checkpoints").json()

    done = stack.wait(job["id"], timeout=120)
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "storage_error", done["error"]
    assert "File too large" in done["error"]["message"] and "artifact store" in done["error"]["message"]
    events = stack.events(job["id"])
    assert events[-1]["type"] == "failed" and events[-1]["level"] == "error"

    listed = {c["id"]: c for c in stack.http.get(f"/jobs/{job['id']}/checkpoints").json()}
    for checkpoint in kept:
        assert checkpoint["id"] in listed
        response = stack.http.get(f"/jobs/{job['id']}/checkpoints/{checkpoint['id']}/download")
        assert response.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
            weights = next(m for m in archive.getmembers() if m.name.endswith("/model.safetensors"))
            data = archive.extractfile(weights).read()
        assert hashlib.sha256(data).hexdigest() == checkpoint["sha256"]  # whole, not truncated
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


def test_out_of_memory_fails_with_advice_and_the_worker_runs_the_next_job(postgres_stack, redis_url) -> None:  # noqa: ANN001
    stack = postgres_stack(redis_url)
    worker = stack.start_worker()
    for pid in _process_tree(worker.pid):  # the main process and its pool processes (restarted ones inherit)
        _, hard = resource.prlimit(pid, resource.RLIMIT_AS)
        resource.prlimit(pid, resource.RLIMIT_AS, (ADDRESS_SPACE, hard))
    huge = stack.spec(task="causal_lm", data={"train": "builtin:tiny_text", "max_length": 16},
                      model={"builtin": "transformer", "config": {"n_layer": 1, "n_head": 128, "n_embd": 16384,
                                                                   "block_size": 16, "vocab_size": 1_000_000}})
    failed = stack.wait(stack.submit(huge)["id"], timeout=180)
    assert failed["status"] == "failed", failed
    assert failed["error"]["type"] == "out_of_memory", failed["error"]
    message = failed["error"]["message"]
    assert "batch_size" in message and "gradient_accumulation_steps" in message
    after = stack.wait(stack.submit(stack.spec(hyperparameters={"epochs": 1, "max_steps": 3}))["id"], timeout=120)
    assert after["status"] == "succeeded", (after["error"], stack.logs())
    assert worker.poll() is None
