"""End-to-end harness: a real uvicorn API and real Celery worker processes, over HTTP.

`stack` runs in both products: SQLite + the embedded filesystem broker, and PostgreSQL + Redis (a fresh
database; a queue name unique to the run, so concurrent runs on one Redis never see each other's jobs).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Stack:
    def __init__(self, mode: str, tmp: Path, env: dict[str, str]) -> None:
        self.mode, self.tmp = mode, tmp
        self.queue = f"e2e-{uuid.uuid4().hex[:10]}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")}
        self.predict_queue = f"{self.queue}-predict"  # POST /jobs/{id}/predict (start_predictor consumes it)
        self.env.update(env, FINETUNE_WORKER_QUEUES=self.queue, FINETUNE_PREDICT_QUEUE=self.predict_queue,
                        FINETUNE_LOG_LEVEL="INFO",
                        FINETUNE_METRICS_FLUSH_SECONDS="0.2", PYTHONUNBUFFERED="1")
        self.procs: list[subprocess.Popen] = []
        self.url = ""
        self.http: httpx.Client | None = None

    # --- processes ------------------------------------------------------------------------------

    def _spawn(self, args: list[str], log_name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.tmp / log_name).open("ab")
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**self.env, **(extra_env or {})},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = self.tmp / log_name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def start_api(self) -> None:
        port = free_port()
        self.api = self._spawn(["-m", "uvicorn", "app.main:app", "--port", str(port), "--log-level", "warning"],
                               "api.log")
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.api.poll() is None, f"API exited:\n{tail(self.api.log_path)}"
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"API did not start:\n{tail(self.api.log_path)}")

    def start_worker(self, extra_env: dict[str, str] | None = None, name: str = "worker") -> subprocess.Popen:
        log_name = f"{name}-{len(self.procs)}.log"
        proc = self._spawn(["-m", "app.cli", "worker", "--queues", self.queue], log_name, extra_env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"worker exited:\n{tail(proc.log_path)}"
            if " ready." in (proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""):
                return proc
            time.sleep(0.2)
        raise AssertionError(f"worker did not become ready:\n{tail(proc.log_path)}")

    def start_predictor(self) -> subprocess.Popen:
        """A worker on the predict queue only, as `finetune serve` and compose's `predictor` run one."""
        queue, self.queue = self.queue, self.predict_queue
        try:
            return self.start_worker(name="predictor")
        finally:
            self.queue = queue

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        if self.http is not None:
            self.http.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{tail(p.log_path)}" for p in self.procs)  # type: ignore[attr-defined]

    # --- API helpers ----------------------------------------------------------------------------

    def spec(self, **overrides: Any) -> dict[str, Any]:
        """A tiny builtin job on this stack's queue; keyword arguments replace top-level sections."""
        hyper = {"epochs": 3, "batch_size": 64, "learning_rate": 0.01, "compile": False, "seed": 0}
        spec: dict[str, Any] = {
            "task": "classification",
            "model": {"builtin": "mlp", "config": {"hidden_sizes": [32], "dropout": 0.0}},
            "data": {"train": "builtin:digits", "validation_split": 0.2},
            "hyperparameters": hyper,
            "resources": {"queue": self.queue},
        }
        hyper.update(overrides.pop("hyperparameters", {}))
        spec.update(overrides)
        return spec

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/jobs", json=spec)
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return self.http.get(f"/jobs/{job_id}/events", params={"limit": 1000}).json()

    def wait(self, job_id: str, until: tuple[str, ...] = TERMINAL, timeout: float = 180,
             check: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in until and (check is None or check(job)):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s\n{self.logs()}")


def _root_conftest() -> Any:
    """tests/conftest.py (its PostgreSQL helpers), loaded by path: every conftest module is named `conftest`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_tests_root_conftest", ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_stack(mode: str, tmp: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Yield a migrated Stack with the API up (workers are started by the fixture or the test)."""
    from app.migrate import upgrade_database

    root = _root_conftest()
    env = {"FINETUNE_HOME": str(tmp / "home"), "FINETUNE_ARTIFACTS": str(tmp / "artifacts")}
    admin = db_url = None
    if mode == "sqlite":
        db_url = f"sqlite:///{tmp / 'finetune.db'}"
    else:
        admin = request.getfixturevalue("postgres_admin_url")
        redis = request.getfixturevalue("redis_url")
        db_url = root.create_postgres_database(admin)
        env["FINETUNE_BROKER_URL"] = redis
    env["FINETUNE_DATABASE_URL"] = db_url
    upgrade_database(db_url)
    stack = Stack(mode, tmp, env)
    try:
        stack.start_api()
        yield stack
    finally:
        stack.close()
        if admin is not None:
            root.drop_postgres_database(admin, db_url)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API + one worker, shared by a module's tests."""
    for s in make_stack(request.param, tmp_path_factory.mktemp(f"e2e-{request.param}"), request):
        s.worker = s.start_worker()
        yield s


@pytest.fixture(params=["sqlite", "postgres"])
def bare_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """API only, per test: the test starts (and kills) its own workers."""
    yield from make_stack(request.param, tmp_path, request)
