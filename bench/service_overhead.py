"""What the service costs over calling the training core directly, and how fast a job starts.

    python bench/service_overhead.py            # a job of about a minute on CPU
    python bench/service_overhead.py --quick    # a few seconds
    python bench/service_overhead.py --backend embedded   # SQLite + filesystem broker instead

In one run:
1. the same job run directly through the core (run_training with an in-memory reporter), timed;
2. the same job through the service end to end (a real uvicorn API and a real `finetune worker`, PostgreSQL +
   Redis on 127.0.0.1 by default): from POST /jobs to the job seen `succeeded`; the ratio of the two
   (target < 1.05);
3. submit-to-running latency: `started_at - created_at` of ~20 tiny jobs submitted one at a time to an idle
   worker (both timestamps are the server's); the median (target < 50 ms with Redis).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def job_spec(quick: bool, queue: str) -> dict[str, Any]:
    epochs = 2 if quick else 25
    return {
        "task": "classification",
        "model": {"builtin": "mlp", "config": {"hidden_sizes": [512, 256], "dropout": 0.1}},
        "data": {"train": "builtin:digits", "validation_split": 0.2},
        "hyperparameters": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.003, "compile": False,
                            "seed": 0},
        "resources": {"queue": queue},
    }


TINY = {"hyperparameters": {"epochs": 1, "max_steps": 1, "batch_size": 32, "compile": False}}


class NullReporter:
    def __init__(self) -> None:
        self.points = 0

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.points += len(values)

    def event(self, level: str, type: str, message: str, data: dict | None = None) -> None:
        pass

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        pass

    def checkpoint_saved(self, info: Any) -> None:
        pass

    def checkpoint_removed(self, name: str) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def run_direct(spec: dict[str, Any], workdir: Path) -> float:
    from worker.training import run_training
    from worker.training.config import RunConfig
    from worker.training.spec import JobSpec

    config = RunConfig(spec=JobSpec.model_validate(spec), output_dir=workdir / "direct", resume=False)
    start = time.perf_counter()
    result = run_training(config, NullReporter())
    elapsed = time.perf_counter() - start
    print(f"direct:  {elapsed:7.2f} s  ({result.steps} steps, {result.metrics})")
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short job instead of about a minute")
    parser.add_argument("--backend", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--latency-jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="direct/service pairs; the best of each counts")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    spec = job_spec(args.quick, queue)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")}
    env.update(FINETUNE_HOME=str(tmp / "home"), FINETUNE_ARTIFACTS=str(tmp / "artifacts"),
               FINETUNE_WORKER_QUEUES=queue, FINETUNE_LOG_LEVEL="WARNING")
    admin = db_url = None
    if args.backend == "redis":
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import create_postgres_database  # noqa: PLC0415

        admin = PG_ADMIN
        db_url = create_postgres_database(admin)
        env.update(FINETUNE_DATABASE_URL=db_url, FINETUNE_BROKER_URL=REDIS)
    else:
        env["FINETUNE_DATABASE_URL"] = f"sqlite:///{tmp / 'finetune.db'}"

    run_direct({**spec, **TINY}, tmp / "warm")  # warm-up: first-use costs (data, allocator), not counted
    directs = [run_direct(spec, tmp / "direct-0")]

    from app.migrate import upgrade_database

    upgrade_database(env["FINETUNE_DATABASE_URL"])
    port = free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--log-level",
                          "warning"], cwd=ROOT, env=env, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", queue], cwd=ROOT, env=env,
                         start_new_session=True),
    ]
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

        def run(body: dict[str, Any], poll: float = 0.02) -> tuple[dict[str, Any], float]:
            start = time.perf_counter()
            job = http.post("/jobs", json=body).raise_for_status().json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(poll)
                job = http.get(f"/jobs/{job['id']}").raise_for_status().json()
            if job["status"] != "succeeded":
                raise SystemExit(f"job {job['id']} {job['status']}: {job['error']}")
            return job, time.perf_counter() - start

        run({**spec, **TINY})  # warm-up: the worker's first job (not counted)
        services = []
        for i in range(args.rounds):  # alternate, so load from elsewhere on the machine hits both sides
            if i:
                directs.append(run_direct(spec, tmp / f"direct-{i}"))
            services.append(run(spec)[1])
            print(f"service: {services[-1]:7.2f} s  (POST /jobs to succeeded, {args.backend})")
        direct, service = min(directs), min(services)
        print(f"overhead ratio: {service / direct:.3f}  (best of {args.rounds}: service {service:.2f} s, "
              f"direct {direct:.2f} s; target < 1.05)")

        latencies = []
        for _ in range(args.latency_jobs):
            job, _ = run({**spec, **TINY}, poll=0.01)
            latencies.append((_ts(job["started_at"]) - _ts(job["created_at"])).total_seconds() * 1000)
        print(f"submit-to-running: median {statistics.median(latencies):.1f} ms, "
              f"min {min(latencies):.1f}, max {max(latencies):.1f} over {len(latencies)} jobs "
              f"({args.backend}; target < 50 ms with Redis)")
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        if admin is not None:
            from conftest import drop_postgres_database  # noqa: PLC0415

            drop_postgres_database(admin, db_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
