"""The worker never runs a job twice and never loses one: duplicates, many jobs at once, a killed worker."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

from app.settings import Settings
from worker.celery_app import enqueue_job


def _settings(stack) -> Settings:  # noqa: ANN001
    return Settings(home=stack.env["FINETUNE_HOME"], database_url=stack.env["FINETUNE_DATABASE_URL"],
                    broker_url=stack.env.get("FINETUNE_BROKER_URL", ""))


def _count(stack, job_id: str, type_: str) -> int:  # noqa: ANN001
    return sum(1 for e in stack.events(job_id) if e["type"] == type_)


def test_a_redelivered_message_does_not_run_the_job_again(stack) -> None:  # noqa: ANN001
    job = stack.submit(stack.spec(hyperparameters={"max_steps": 30}))
    settings = _settings(stack)
    enqueue_job(job["id"], stack.queue, settings)  # the same message, delivered again while it runs
    done = stack.wait(job["id"])
    enqueue_job(job["id"], stack.queue, settings)  # and once more after it finished
    log = stack.worker.log_path
    deadline = time.monotonic() + 30
    while log.read_text().count(f"job {job['id']} is not claimable") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log.read_text().count(f"job {job['id']} is not claimable") == 2
    assert done["status"] == "succeeded" and stack.job(job["id"])["attempts"] == 1
    assert _count(stack, job["id"], "started") == 1 and _count(stack, job["id"], "claimed") == 1


def test_fifty_jobs_submitted_at_once_each_run_exactly_once(stack) -> None:  # noqa: ANN001
    spec = stack.spec(hyperparameters={"epochs": 1, "max_steps": 1, "checkpoint_every_steps": None})
    with ThreadPoolExecutor(max_workers=10) as pool:
        jobs = list(pool.map(lambda _: stack.submit(spec), range(50)))
    ids = {j["id"] for j in jobs}
    assert len(ids) == 50
    listed = stack.http.get("/jobs", params={"limit": 100}).json()["items"]
    assert ids <= {j["id"] for j in listed}
    for job_id in ids:
        done = stack.wait(job_id, timeout=300)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1
        assert _count(stack, job_id, "started") == 1


def test_a_killed_worker_job_is_requeued_and_resumes_from_its_checkpoint(bare_stack) -> None:  # noqa: ANN001
    stack = bare_stack
    short_lease = {"FINETUNE_LEASE_SECONDS": "5"}
    first = stack.start_worker(short_lease)
    # Long enough that the kill lands mid-run even on an idle machine (progress reaches the API about once a
    # second), short enough to finish quickly after the resume.
    job = stack.submit(stack.spec(hyperparameters={"epochs": 30, "max_steps": 1500, "batch_size": 16,
                                                   "checkpoint_every_steps": 100, "keep_checkpoints": 2}))

    def past_a_checkpoint(j: dict) -> bool:
        # Progress reaches the row about once a second, checkpoint rows at once: a listed checkpoint while
        # the job still runs is the earliest sure sign that there is something to resume from.
        return bool(stack.http.get(f"/jobs/{j['id']}/checkpoints").json())

    stack.wait(job["id"], until=("running",), check=past_a_checkpoint, timeout=120)
    stack.stop(first, signal.SIGKILL)  # the whole worker, pool process included: no goodbye
    stack.start_worker(short_lease)
    done = stack.wait(job["id"], timeout=240)
    assert done["status"] == "succeeded", (done["error"], stack.logs())
    assert done["attempts"] == 2
    types = [e["type"] for e in stack.events(job["id"])]
    assert "requeued" in types and "resumed" in types
    assert types.index("requeued") < types.index("resumed")
    steps = [s for s, _ in stack.http.get(f"/jobs/{job['id']}/metrics",
                                          params={"names": "train_loss", "max_points": 100000}).json()["series"]["train_loss"]]
    assert steps == list(range(1, done["progress"]["total_steps"] + 1))  # unique and complete
