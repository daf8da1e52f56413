"""What the service costs over calling the training core directly, and how fast a job starts.

    python bench/service_overhead.py            # a job of about a minute on CPU
    python bench/service_overhead.py --quick    # a few seconds
    python bench/service_overhead.py --backend embedded   # SQLite + filesystem broker instead

In one run:
1. the same job run directly through the core (run_training with an in-memory reporter), timed;
2. the same job through the service end to end (a real uvicorn API and a real `finetune worker`, PostgreSQL +
   Redis on 127.0.0.1 by default): from the moment POST /jobs is sent to the job's `finished_at` (the server
   writes it when the outcome is committed; same machine, same clock); the ratio of the two (target < 1.05).
   The client polls once a second, as `finetune watch` does: polling every few milliseconds would itself load
   the API and steal CPU from training on a small machine (it measured a 1.8x "overhead" on 2 cores);
   Shared virtual machines lend their cores to neighbours ("steal"), so one pair of runs can differ by 20%
   either way. The script alternates direct and service runs, prints the steal of each, and reports the best
   of each side, the median of the pair ratios, and the ratio of machine CPU-seconds spent (all processes:
   API, worker, PostgreSQL, Redis; steal is not counted), which noise from neighbours does not move;
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

from worker.training.reporting import QuietReporter  # noqa: E402

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def job_spec(quick: bool, queue: str) -> dict[str, Any]:
    epochs = 2 if quick else 120  # ~0.45 s an epoch on one idle 2-core machine: about a minute
    return {
        "task": "classification",
        "model": {"builtin": "mlp", "config": {"hidden_sizes": [1024, 1024], "dropout": 0.1}},
        "data": {"train": "builtin:digits", "validation_split": 0.2},
        "hyperparameters": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.003, "compile": False,
                            "seed": 0},
        # Without these an MLP drives its training loss on digits to ~1e-8 within a minute, and the CPU then
        # slows down on denormal floats, by a varying amount: noise in a ratio that should measure the service.
        "regularization": {"weight_decay": 0.01, "label_smoothing": 0.1},
        "resources": {"queue": queue},
    }


TINY = {"hyperparameters": {"epochs": 1, "max_steps": 1, "batch_size": 32, "compile": False}}


class NullReporter(QuietReporter):
    """Counts metric points (so the direct run does the reporter's share of work) and records nothing."""

    def __init__(self) -> None:
        self.points = 0

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.points += len(values)


class MachineCpu:
    """Machine-wide CPU-seconds spent (every process; steal not counted) and the share stolen, over a window.

    From /proc/stat (Linux); elsewhere both read as NaN.
    """

    def __init__(self) -> None:
        self.start = self._read()
        self.busy = self.steal = float("nan")

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        hz = os.sysconf("SC_CLK_TCK")
        return (user + nice + system + irq + softirq) / hz, steal / hz, sum(fields[:8]) / hz

    def stop(self) -> MachineCpu:
        end = self._read()
        if self.start is not None and end is not None:
            busy, steal, total = (b - a for a, b in zip(self.start, end, strict=True))
            self.busy, self.steal = busy, steal / total if total else 0.0
        return self

    def __str__(self) -> str:
        return f"{self.busy:6.1f} cpu-s, steal {self.steal:5.1%}"


def run_direct(spec: dict[str, Any], workdir: Path) -> tuple[float, MachineCpu]:
    from worker.training import run_training
    from worker.training.config import RunConfig
    from worker.training.spec import JobSpec

    config = RunConfig(spec=JobSpec.model_validate(spec), output_dir=workdir / "direct", resume=False)
    cpu = MachineCpu()
    start = time.perf_counter()
    result = run_training(config, NullReporter())
    elapsed = time.perf_counter() - start
    cpu.stop()
    print(f"direct:  {elapsed:7.2f} s  {cpu}  ({result.steps} steps, {result.metrics})")
    return elapsed, cpu


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def print_timeline(http: httpx.Client, job: dict[str, Any]) -> None:
    """Seconds since created_at of the job's timestamps and events: where a service job spends its time."""
    t0 = _ts(job["created_at"])
    events = http.get(f"/jobs/{job['id']}/events", params={"limit": 500}).raise_for_status().json()
    rows = [(_ts(job["started_at"]), "started_at", "")] + [
        (_ts(e["created_at"]), e["type"], e["message"][:70]) for e in events
    ] + [(_ts(job["finished_at"]), "finished_at", "")]
    for ts, kind, message in sorted(rows, key=lambda r: r[0]):
        print(f"  {(ts - t0).total_seconds():8.3f} s  {kind:<20} {message}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short job instead of about a minute")
    parser.add_argument("--backend", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--latency-jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="direct/service pairs, alternated")
    parser.add_argument("--timeline", action="store_true", help="print each service job's event timeline")
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

        def run(body: dict[str, Any], poll: float) -> tuple[dict[str, Any], float]:
            """Submit, wait for the outcome; the seconds from sending POST /jobs to the server's finished_at."""
            start = time.time()
            job = http.post("/jobs", json=body).raise_for_status().json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(poll)
                job = http.get(f"/jobs/{job['id']}").raise_for_status().json()
            if job["status"] != "succeeded":
                raise SystemExit(f"job {job['id']} {job['status']}: {job['error']}")
            return job, _ts(job["finished_at"]).timestamp() - start

        run({**spec, **TINY}, poll=0.1)  # warm-up: the worker's first job (not counted)
        directs: list[tuple[float, MachineCpu]] = []
        services: list[tuple[float, MachineCpu]] = []
        for i in range(args.rounds):  # alternate, so load from elsewhere on the machine hits both sides
            directs.append(run_direct(spec, tmp / f"direct-{i}"))
            cpu = MachineCpu()
            job, elapsed = run(spec, poll=1.0)
            services.append((elapsed, cpu.stop()))
            if args.timeline:
                print_timeline(http, job)
            print(f"service: {elapsed:7.2f} s  {cpu}  (POST /jobs sent to finished_at, {args.backend})")
        direct, service = min(d for d, _ in directs), min(s for s, _ in services)
        pairs = [s / d for (d, _), (s, _) in zip(directs, services, strict=True)]
        cpu_pairs = [sc.busy / dc.busy for (_, dc), (_, sc) in zip(directs, services, strict=True)]
        print(f"overhead ratio: {service / direct:.3f}  (best of {args.rounds}: service {service:.2f} s, "
              f"direct {direct:.2f} s; target < 1.05)")
        print(f"  median of the {len(pairs)} pair ratios {statistics.median(pairs):.3f} "
              f"({', '.join(f'{r:.3f}' for r in pairs)}); machine CPU-seconds, service / direct: median "
              f"{statistics.median(cpu_pairs):.3f} ({', '.join(f'{r:.3f}' for r in cpu_pairs)})")

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
