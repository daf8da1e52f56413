"""Throughput of the service with one and with two worker processes: tiny jobs per minute, and the ratio.

    python bench/scaling.py                      # PostgreSQL + Redis on 127.0.0.1 (as docker compose runs)
    python bench/scaling.py --backend embedded   # SQLite + the filesystem broker (`finetune serve`)
    python bench/scaling.py --jobs 24 --workers 1,2,4

A real uvicorn API and real `finetune worker` processes. Each configuration first runs a warm-up round (one
job per worker: imports torch in every worker's child process) that is not counted, then submits `--jobs`
jobs at once and measures from the first submission to the last job finished. Tiny jobs measure the
service's overhead per job (claim, lease, reporting, checkpoints) more than training; on a machine with fewer
cores than workers the ratio is bounded by the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "task": "classification",
    "model": {"builtin": "mlp", "config": {"hidden_sizes": [16], "dropout": 0.0}},
    "data": {"train": "builtin:wine", "validation_split": 0.2},
    "hyperparameters": {"epochs": 1, "batch_size": 32, "learning_rate": 0.01, "compile": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """API + workers as processes, on a fresh database and a queue of their own."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.tmp, self.backend = tmp, backend
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")}
        self.env.update(FINETUNE_HOME=str(tmp / "home"), FINETUNE_ARTIFACTS=str(tmp / "artifacts"),
                        FINETUNE_WORKER_QUEUES=self.queue, FINETUNE_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
        self.admin = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
        self.database: str | None = None
        if backend == "postgres":
            from sqlalchemy import create_engine, text

            self.database = f"finetune_bench_{uuid.uuid4().hex[:10]}"
            engine = create_engine(self.admin, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.database}"'))
            engine.dispose()
            self.env["FINETUNE_DATABASE_URL"] = self.admin.rsplit("/", 1)[0] + f"/{self.database}"
            self.env["FINETUNE_BROKER_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        else:
            self.env["FINETUNE_DATABASE_URL"] = f"sqlite:///{tmp / 'finetune.db'}"
        self.procs: list[subprocess.Popen] = []
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=self.env, check=True,
                       capture_output=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._spawn(["-m", "uvicorn", "app.main:app", "--port", str(port), "--log-level", "warning"], "api")
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self._until(lambda: self._get_ok("/health"), 60, "API did not start")

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = (self.tmp / f"{name}-{len(self.procs)}.log").open("ab")
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def _get_ok(self, path: str) -> bool:
        try:
            return self.http.get(path).status_code == 200
        except httpx.TransportError:
            return False

    @staticmethod
    def _until(check, timeout: float, message: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(message)
            time.sleep(0.05)

    def add_workers(self, n: int) -> None:
        for _ in range(n):
            self._spawn(["-m", "app.cli", "worker", "--queues", self.queue], "worker")

    def run_jobs(self, n: int, timeout: float = 900) -> float:
        """Submit n jobs at once; seconds until the last one finished."""
        start = time.perf_counter()
        ids = []
        for i in range(n):
            response = self.http.post("/jobs", json={**SPEC, "name": f"bench-{i}", "resources": {"queue": self.queue}})
            response.raise_for_status()
            ids.append(response.json()["id"])
        pending = set(ids)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} jobs unfinished after {timeout} s")
            for job_id in list(pending):
                job = self.http.get(f"/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    if job["status"] != "succeeded":
                        raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
                    pending.discard(job_id)
            time.sleep(0.05)
        return time.perf_counter() - start

    def close(self) -> None:
        self.http.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self.database:
            from sqlalchemy import create_engine, text

            engine = create_engine(self.admin, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
            engine.dispose()


def measure(backend: str, workers: int, jobs: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    service = Service(backend, tmp)
    try:
        service.add_workers(workers)
        service.run_jobs(2 * workers)  # warm-up: every worker's child has imported torch
        seconds = service.run_jobs(jobs)
    finally:
        service.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"workers": workers, "jobs": jobs, "seconds": round(seconds, 2),
            "jobs_per_minute": round(60 * jobs / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgres", "embedded"], default="postgres")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, comma separated")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scaling.json")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    rows = []
    for count in counts:
        row = measure(args.backend, count, args.jobs)
        rows.append(row)
        print(f"{args.backend:9s} workers={count}  {args.jobs} jobs in {row['seconds']:7.2f} s  "
              f"{row['jobs_per_minute']:6.1f} jobs/min", flush=True)
    base = rows[0]["jobs_per_minute"]
    for row in rows[1:]:
        row["ratio_vs_first"] = round(row["jobs_per_minute"] / base, 2)
        print(f"ratio {row['workers']} vs {rows[0]['workers']} workers: {row['ratio_vs_first']:.2f}x "
              f"(machine has {os.cpu_count()} CPUs)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"backend": args.backend, "cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
