"""The broker goes away mid-run and comes back empty (a Redis of our own, killed without persistence):
the running job finishes, a job submitted meanwhile is accepted, queued, and runs once the broker is back
(the reaper re-sends it), and each job runs exactly once."""

from __future__ import annotations

import time

from fault_support import count


def test_redis_restart_loses_no_job_and_runs_none_twice(postgres_stack, own_redis) -> None:  # noqa: ANN001
    stack = postgres_stack(own_redis.url, FINETUNE_LEASE_SECONDS="10")
    stack.start_worker()
    # Long enough to still be training while the broker is away, even on an idle machine.
    running = stack.submit(stack.spec(hyperparameters={"epochs": 50, "max_steps": 2500, "batch_size": 16,
                                                       "checkpoint_every_steps": 500}))
    stack.wait(running["id"], until=("running",), check=lambda j: j["progress"]["step"] >= 5, timeout=120)

    own_redis.stop()
    response = stack.http.post("/jobs", json=stack.spec(hyperparameters={"epochs": 1, "max_steps": 3}))
    assert response.status_code == 201, response.text
    waiting = response.json()
    assert waiting["status"] == "queued"
    assert [e["type"] for e in stack.events(waiting["id"])] == ["created", "enqueue_failed"]
    ready = stack.http.get("/ready")
    assert ready.status_code == 503 and ready.json()["broker"].startswith("unavailable")
    before = stack.job(running["id"])
    assert before["status"] == "running", before
    time.sleep(3)  # the worker notices the lost connection and keeps training (a fast machine may even finish)
    during = stack.job(running["id"])
    assert during["status"] in ("running", "succeeded"), during
    assert during["progress"]["step"] > before["progress"]["step"], (before["progress"], during["progress"])

    own_redis.start()  # empty: the running job's unacked message is gone too
    done = stack.wait(running["id"], timeout=240)
    assert done["status"] == "succeeded", (done["error"], stack.logs())
    late = stack.wait(waiting["id"], timeout=180)  # re-sent by the reaper once it is stale (>= 30 s)
    assert late["status"] == "succeeded", (late["error"], stack.logs())
    for job in (done, late):
        assert job["attempts"] == 1
        assert count(stack, job["id"], "started") == 1 and count(stack, job["id"], "claimed") == 1
    assert stack.http.get("/ready").json() == {"database": "ok", "broker": "ok"}
