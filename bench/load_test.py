"""Load test of the API on loopback: N job submissions from C concurrent clients (httpx, async) against
uvicorn with a few worker processes, PostgreSQL (a fresh database) and Redis; no Celery worker runs, so
this measures the API: validation, the insert, the enqueue.

Each submission carries its own Idempotency-Key and a share of them are sent twice (a client retrying),
so the check at the end is that every key made exactly one row: nothing lost, nothing duplicated.
Prints p50/p90/p99 latency and requests per second.

    python bench/load_test.py [--jobs 500] [--clients 50] [--workers 2] [--retry-share 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SPEC = {"task": "classification", "model": {"builtin": "mlp", "config": {"hidden_sizes": [16]}},
        "data": {"train": "builtin:digits"}, "hyperparameters": {"epochs": 1, "max_steps": 3, "compile": False},
        "resources": {"queue": f"bench-{uuid.uuid4().hex[:8]}"}}  # a queue no worker consumes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_load(url: str, jobs: int, clients: int, retry_share: float) -> tuple[list[float], dict[int, int], float, list[str]]:
    keys = [f"load-{uuid.uuid4().hex}" for _ in range(jobs)]
    retried = set(keys[: int(jobs * retry_share)])
    work = [(k, 0) for k in keys] + [(k, 1) for k in retried]
    queue: asyncio.Queue = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    ids: dict[str, set[str]] = {}

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            key, _ = queue.get_nowait()
            start = time.perf_counter()
            response = await http.post("/jobs", json=SPEC, headers={"Idempotency-Key": key})
            latencies.append(time.perf_counter() - start)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code in (200, 201):
                ids.setdefault(key, set()).add(response.json()["id"])

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    split = [k for k, v in ids.items() if len(v) != 1]  # a key answered with two different jobs
    return latencies, statuses, elapsed, split + [k for k in keys if k not in ids]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--retry-share", type=float, default=0.2, help="share of submissions sent twice")
    args = parser.parse_args()

    from sqlalchemy import create_engine, text

    from app.migrate import upgrade_database

    name = f"finetune_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")}
    home = Path(tempfile.mkdtemp(prefix="finetune-load-"))
    env.update(FINETUNE_DATABASE_URL=db_url, FINETUNE_BROKER_URL=REDIS, FINETUNE_HOME=str(home),
               FINETUNE_ARTIFACTS=str(home / "artifacts"))
    api = None
    try:
        upgrade_database(db_url)
        api = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port),
                                "--workers", str(args.workers), "--log-level", "warning"], cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and api.poll() is None, "the API did not start"
            time.sleep(0.2)
        latencies, statuses, elapsed, problems = asyncio.run(run_load(url, args.jobs, args.clients, args.retry_share))

        engine = create_engine(db_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*), count(DISTINCT idempotency_key) FROM jobs")).one()
            events = conn.execute(text("SELECT count(*) FROM job_events WHERE type = 'created'")).scalar_one()
        engine.dispose()

        requests = len(latencies)
        print(f"{requests} POST /jobs ({args.jobs} jobs, {requests - args.jobs} retried with the same key) "
              f"from {args.clients} clients, uvicorn --workers {args.workers}, PostgreSQL + Redis")
        print(f"status codes: {dict(sorted(statuses.items()))}")
        print(f"latency ms: p50 {percentile(latencies, 0.5) * 1000:.1f}  p90 {percentile(latencies, 0.9) * 1000:.1f}  "
              f"p99 {percentile(latencies, 0.99) * 1000:.1f}  mean {statistics.mean(latencies) * 1000:.1f}")
        print(f"throughput: {requests / elapsed:.1f} requests/s over {elapsed:.2f} s")
        print(f"rows: {rows[0]} jobs, {rows[1]} distinct idempotency keys, {events} 'created' events")
        ok = rows[0] == rows[1] == args.jobs == events and not problems and set(statuses) <= {200, 201}
        print("OK: every job stored exactly once" if ok else f"FAILED: lost or duplicated ({problems[:5]})")
        return 0 if ok else 1
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
