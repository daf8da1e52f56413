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


def _final_weights(stack, job_id: str) -> dict:  # noqa: ANN001
    import io
    import tarfile

    from safetensors.torch import load

    archive = stack.http.get(f"/jobs/{job_id}/checkpoints/last/download")
    assert archive.status_code == 200, archive.text
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/model.safetensors"))
        return load(tar.extractfile(member).read())


def test_a_killed_worker_job_is_requeued_and_resumes_from_its_checkpoint(bare_stack) -> None:  # noqa: ANN001
    """SIGKILL the whole worker twice, at different steps: each time the job is requeued, resumes from its last
    checkpoint on a fresh worker process, and in the end its weights match an uninterrupted run's."""
    import torch

    stack = bare_stack
    env = {"FINETUNE_LEASE_SECONDS": "5", "FINETUNE_MAX_ATTEMPTS": "5"}
    # Long enough that each kill lands mid-run even on an idle machine (progress reaches the API about once a
    # second), short enough to finish quickly after the resumes.
    spec = stack.spec(hyperparameters={"epochs": 30, "max_steps": 1500, "batch_size": 16,
                                       "checkpoint_every_steps": 100, "keep_checkpoints": 2})
    worker = stack.start_worker(env)
    job = stack.submit(spec)

    def checkpoint_past(step: int):  # noqa: ANN202
        # Checkpoint rows are listed at once, progress about once a second: a listed checkpoint beyond `step`
        # while the job still runs is the earliest sure sign that there is something new to resume from.
        def check(j: dict) -> bool:
            saved = stack.http.get(f"/jobs/{j['id']}/checkpoints").json()
            return any(c["step"] > step for c in saved)
        return check

    killed_after = 0
    for _ in range(2):
        stack.wait(job["id"], until=("running",), check=checkpoint_past(killed_after), timeout=120)
        killed_after = max(c["step"] for c in stack.http.get(f"/jobs/{job['id']}/checkpoints").json())
        stack.stop(worker, signal.SIGKILL)  # the whole worker, pool process included: no goodbye
        worker = stack.start_worker(env)
    done = stack.wait(job["id"], timeout=240)
    assert done["status"] == "succeeded", (done["error"], stack.logs())
    assert done["attempts"] == 3
    types = [e["type"] for e in stack.events(job["id"])]
    assert types.count("requeued") == 2 and types.count("resumed") == 2
    assert types.index("requeued") < types.index("resumed")
    resumed_from = [e["data"] for e in stack.events(job["id"]) if e["type"] == "resumed"]
    assert len(resumed_from) == 2 and resumed_from[0] != resumed_from[1]  # two different steps
    steps = [s for s, _ in stack.http.get(f"/jobs/{job['id']}/metrics",
                                          params={"names": "train_loss", "max_points": 100000}).json()["series"]["train_loss"]]
    assert steps == list(range(1, done["progress"]["total_steps"] + 1))  # unique and complete

    # The same spec and seed, never interrupted: the same weights, to float tolerance on CPU.
    straight = stack.wait(stack.submit(spec)["id"], timeout=240)
    assert straight["status"] == "succeeded" and straight["attempts"] == 1
    resumed, uninterrupted = _final_weights(stack, job["id"]), _final_weights(stack, straight["id"])
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
