"""Run docker-compose.yml's services as local processes: each service's own command, with the environment
compose gives it, minus what only a container engine provides.

What is rewritten, and nothing else:
- service hosts in URLs (`postgres`, `redis`, `minio`) -> 127.0.0.1 and the test machine's servers; the
  database name -> a fresh database; Redis: no password (the local server has none) and a database index of
  the test's own, so no other test's queue is touched; MinIO -> the moto S3 server;
- container paths -> folders under the test's tmp dir, following the service's volumes (`artifacts:/data`
  becomes one folder shared by every service that mounts that volume); `/tmp` -> a folder per service;
- the API's `--host 0.0.0.0 --port 8000` -> 127.0.0.1 and a free port (in the command and its healthcheck).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from compose import ROOT, active_services, load_compose, service_command, service_environment

VENV_BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ensure_postgres_role(admin_url: str, user: str, password: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :u"), {"u": user}).scalar()
        if not exists:
            try:
                conn.execute(text(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'"))
            except Exception:  # created meanwhile by a concurrent run
                pass
    engine.dispose()


class ComposeStack:
    def __init__(self, tmp: Path, dotenv: dict[str, str], *, database: str, redis_db: int,
                 s3_endpoint: str | None = None, profiles: set[str] = frozenset()) -> None:
        self.tmp = tmp
        self.dotenv = dotenv
        self.model = load_compose(env=dotenv)
        self.services = active_services(self.model, profiles)
        self.database, self.redis_db, self.s3_endpoint = database, redis_db, s3_endpoint
        self.api_port = free_port()
        self.procs: list[subprocess.Popen] = []
        self._logs: dict[int, Path] = {}
        self._envs: dict[int, dict[str, str]] = {}
        self._replicas: dict[str, int] = {}

    # --- what compose would give the container, mapped onto this machine --------------------------------

    def volume_dir(self, volume: str) -> Path:
        path = self.tmp / "volumes" / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _mounts(self, name: str, replica: int) -> list[tuple[str, Path]]:
        mounts = [("/tmp", self.tmp / "containers" / f"{name}-{replica}" / "tmp")]  # each container its own
        for entry in self.services[name].get("volumes", []):
            source, target = entry.split(":")[:2]
            mounts.append((target, self.volume_dir(source)))
        for _, path in mounts:
            path.mkdir(parents=True, exist_ok=True)
        return mounts

    def _map_path(self, value: str, mounts: list[tuple[str, Path]]) -> str:
        for target, local in mounts:
            if value == target or value.startswith(target + "/"):
                return str(local) + value[len(target):]
        return value

    def _map_url(self, value: str) -> str:
        parts = urlsplit(value)
        host = parts.hostname
        if host == "postgres":
            auth = parts.netloc.rsplit("@", 1)[0]
            return urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:5432", path=f"/{self.database}"))
        if host == "redis":
            return urlunsplit(parts._replace(netloc="127.0.0.1:6379", path=f"/{self.redis_db}"))
        if host == "minio":
            assert self.s3_endpoint, "the stack uses MinIO but the test gave no S3 server"
            return self.s3_endpoint
        return value

    def env_for(self, name: str, replica: int = 0) -> dict[str, str]:
        mounts = self._mounts(name, replica)
        env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.tmp / "home"),
               "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        for key, value in service_environment(self.services[name], self.dotenv).items():
            if "://" in value:
                value = self._map_url(value)
            env[key] = self._map_path(value, mounts)
        return env

    def _map_args(self, args: list[str]) -> list[str]:
        mapped = []
        for i, arg in enumerate(args):
            if i and args[i - 1] == "--host" and arg == "0.0.0.0":
                arg = "127.0.0.1"
            elif i and args[i - 1] == "--port" and arg == "8000":
                arg = str(self.api_port)
            mapped.append(arg.replace("127.0.0.1:8000", f"127.0.0.1:{self.api_port}"))
        return mapped

    def command(self, name: str) -> list[str]:
        return self._map_args(service_command(self.services[name]))

    # --- running ----------------------------------------------------------------------------------------

    def run_once(self, name: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(name), cwd=ROOT, env=self.env_for(name), capture_output=True,
                              text=True, timeout=timeout)

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a replica of a service (like `--scale`: each replica has its own /tmp)."""
        replica = self._replicas[name] = self._replicas.get(name, -1) + 1
        log = self.tmp / f"{name}-{replica}.log"
        env = {**self.env_for(name, replica), **(extra_env or {})}
        proc = subprocess.Popen(self.command(name), cwd=ROOT, env=env, stdout=log.open("ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        self._logs[proc.pid] = log
        self._envs[proc.pid] = env
        return proc

    def healthy(self, name: str, proc: subprocess.Popen) -> subprocess.CompletedProcess:
        """Run the service's compose healthcheck (`CMD` form) in that replica's environment."""
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        return subprocess.run(self._map_args(test[1:]), cwd=ROOT, env=self._envs[proc.pid],
                              capture_output=True, text=True, timeout=60)

    def wait_healthy(self, name: str, proc: subprocess.Popen, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{name} exited:\n{self.log(proc)}"
            if self.healthy(name, proc).returncode == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"{name} not healthy after {timeout} s:\n{self.log(proc)}")

    def log(self, proc: subprocess.Popen) -> str:
        return tail(self._logs[proc.pid])

    def logs(self) -> str:
        return "\n".join(f"--- {self._logs[p.pid].name}\n{self.log(p)}" for p in self.procs)

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def new_redis_db() -> int:
    """A Redis database index for this run (the e2e tests use 0 with their own queue names)."""
    return 1 + uuid.uuid4().int % 15


def wait_job(http: Any, job_id: str, timeout: float = 240, logs: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = http.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout} s\n{logs() if logs else ''}")
