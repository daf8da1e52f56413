"""Routing by queue: two compose workers on different queues each take only their own jobs; GET /workers shows
who consumes what, and a job on a queue nobody consumes says so."""

from __future__ import annotations

import time

import httpx
from stack import ComposeStack, wait_job

SPEC = {
    "task": "classification",
    "model": {"builtin": "mlp", "config": {"hidden_sizes": [8], "dropout": 0.0}},
    "data": {"train": "builtin:wine", "validation_split": 0.2},
    "hyperparameters": {"epochs": 1, "batch_size": 32, "learning_rate": 0.01, "compile": False},
}


def _received(stack: ComposeStack, worker, job_id: str) -> bool:  # noqa: ANN001
    return job_id in stack.log(worker)


def test_workers_take_only_the_queues_they_consume(bare_compose_stack: ComposeStack) -> None:
    stack = bare_compose_stack
    cpu_worker = stack.start("worker", {"FINETUNE_WORKER_QUEUES": "cpu"})
    stack.wait_healthy("worker", cpu_worker)
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        # resources.gpus > 0 routes to `gpu` by default; no resources routes to `cpu`.
        gpu_job = http.post("/jobs", json={**SPEC, "name": "wants-a-gpu", "resources": {"gpus": 1}}).json()
        cpu_job = http.post("/jobs", json={**SPEC, "name": "cpu-only"}).json()
        assert wait_job(http, cpu_job["id"], logs=stack.logs)["status"] == "succeeded"
        time.sleep(1.0)  # the idle cpu worker had every chance to take the gpu job
        assert http.get(f"/jobs/{gpu_job['id']}").json()["status"] == "queued"
        [only] = http.get("/workers").json()
        assert only["queues"] == ["cpu"] and only["pid"] == cpu_worker.pid
        warnings = [e for e in http.get(f"/jobs/{gpu_job['id']}/events").json() if e["type"] == "no_worker"]
        assert len(warnings) == 1 and "queue 'gpu' (live workers consume 'cpu')" in warnings[0]["message"]
        assert "no_worker" not in {e["type"] for e in http.get(f"/jobs/{cpu_job['id']}/events").json()}

        gpu_worker = stack.start("worker", {"FINETUNE_WORKER_QUEUES": "gpu"})
        stack.wait_healthy("worker", gpu_worker)
        deadline = time.monotonic() + 30  # healthy (its heartbeat file) can come a moment before ready
        while (live := sorted(w["queues"][0] for w in http.get("/workers").json())) != ["cpu", "gpu"]:
            assert time.monotonic() < deadline, live
            time.sleep(0.2)
        wait_job(http, gpu_job["id"], logs=stack.logs)
        claimed = [e for e in http.get(f"/jobs/{gpu_job['id']}/events").json() if e["type"] == "claimed"]
        stack.stop(cpu_worker)  # a worker that stops says goodbye: its row goes at once
        assert [w["queues"] for w in http.get("/workers").json()] == [["gpu"]]
    assert len(claimed) == 1
    assert _received(stack, gpu_worker, gpu_job["id"]) and not _received(stack, cpu_worker, gpu_job["id"])
    assert _received(stack, cpu_worker, cpu_job["id"]) and not _received(stack, gpu_worker, cpu_job["id"])
