"""PostgreSQL becomes unreachable (a TCP proxy in front of it is cut) and comes back: the API answers
503 with a clear body and Retry-After meanwhile and recovers by itself; a job training through the outage
finishes on its first attempt with every metric point recorded once."""

from __future__ import annotations

import time

from fault_support import count

OUTAGE_SECONDS = 5


def test_api_and_worker_ride_out_a_database_outage(postgres_stack, pg_proxy, redis_url) -> None:  # noqa: ANN001
    stack = postgres_stack(redis_url, proxy=pg_proxy)
    worker = stack.start_worker()
    job = stack.submit(stack.spec(hyperparameters={"epochs": 50, "max_steps": 250, "batch_size": 16,
                                                   "checkpoint_every_steps": 25}))
    stack.wait(job["id"], until=("running",), check=lambda j: j["progress"]["step"] >= 10, timeout=120)

    pg_proxy.cut()
    cut_at = time.monotonic()
    for method, path in (("GET", "/jobs"), ("GET", f"/jobs/{job['id']}"), ("POST", "/jobs"), ("GET", "/datasets")):
        response = stack.http.request(method, path, json=stack.spec() if method == "POST" else None)
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert response.json()["detail"].startswith("database unavailable")
        assert response.headers["retry-after"] == "5"
    ready = stack.http.get("/ready")
    assert ready.status_code == 503 and ready.json()["database"].startswith("unavailable")
    assert stack.http.get("/health").status_code == 200
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))

    pg_proxy.restore()
    deadline = time.monotonic() + 30
    while stack.http.get("/jobs").status_code != 200:  # no restart: the pool reconnects by itself
        assert time.monotonic() < deadline, "the API did not recover"
        time.sleep(0.2)
    done = stack.wait(job["id"], timeout=240)
    assert done["status"] == "succeeded", (done["error"], stack.logs())
    assert done["attempts"] == 1 and count(stack, job["id"], "started") == 1
    series = stack.http.get(f"/jobs/{job['id']}/metrics", params={"names": "train_loss"}).json()["series"]
    steps = [s for s, _ in series["train_loss"]]
    assert steps == list(range(1, done["progress"]["total_steps"] + 1))  # none lost, none doubled
    log = worker.log_path.read_text(errors="replace")
    assert "database unreachable" in log or f"heartbeat for job {job['id']} failed" in log  # it did see it
