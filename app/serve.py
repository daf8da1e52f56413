"""`finetune serve`: the embedded default in one command.

Migrates the database, then runs the API (uvicorn) and one worker as child processes and watches them: a
worker that dies is restarted (its job is requeued by the reaper and resumes from its checkpoint), an API
that dies stops everything. SIGINT/SIGTERM stop both: the worker hands a running job back to the queue,
so the next start resumes it. With FINETUNE_DATABASE_URL / FINETUNE_BROKER_URL set, the same command runs
against PostgreSQL and Redis.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.settings import Settings, get_settings

log = logging.getLogger("finetune.serve")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
STOP_GRACE_SECONDS = 30.0
RESTART_BACKOFF_MAX = 30.0


def _die_with_parent() -> None:
    """Children get SIGTERM if the supervisor itself is killed (Linux), so nothing is left behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Supervisor:
    def __init__(self, host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
        self.host, self.port = host, port
        self.settings = settings or get_settings()
        self.stopping = False
        self.api: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.predictor: subprocess.Popen | None = None  # the predict queue's own worker (never behind training)

    # --- children -------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Pin the resolved locations so children agree with what was printed, whatever their cwd.
        env.update(FINETUNE_HOME=str(self.settings.home), FINETUNE_DATABASE_URL=self.settings.database_url,
                   FINETUNE_BROKER_URL=self.settings.broker_url, FINETUNE_ARTIFACTS=self.settings.artifacts)
        return env

    def _spawn(self, args: list[str]) -> subprocess.Popen:
        # Own session: a terminal's Ctrl-C reaches only the supervisor, which then stops children in order.
        return subprocess.Popen([sys.executable, *args], env=self._env(), start_new_session=True,
                                preexec_fn=_die_with_parent)

    def start_api(self) -> subprocess.Popen:
        level = self.settings.log_level.lower()
        return self._spawn(["-m", "uvicorn", "app.main:app", "--host", self.host, "--port", str(self.port),
                            "--log-level", level if level in ("critical", "error", "warning", "info", "debug") else "info"])

    def start_worker(self) -> subprocess.Popen:
        return self._spawn(["-m", "app.cli", "worker", "--concurrency", "1", "--queues", ",".join(self.settings.queues)])

    def start_predictor(self) -> subprocess.Popen:
        return self._spawn(["-m", "app.cli", "worker", "--concurrency", "1", "--queues", self.settings.predict_queue])

    # --- lifecycle ------------------------------------------------------------------------------

    def _describe(self) -> None:
        from sqlalchemy import make_url

        s = self.settings
        print(f"finetune-service on http://{self.host}:{self.port}  (docs at /docs)", flush=True)
        print(f"  database:  {make_url(s.database_url).render_as_string(hide_password=True)}", flush=True)
        print(f"  broker:    {s.broker_url}" + (f" ({s.broker_dir})" if s.broker_url.startswith('filesystem') else ""),
              flush=True)
        print(f"  artifacts: {s.artifacts}", flush=True)
        print(f"  queues:    {', '.join(s.queues)}", flush=True)

    def _check_exposure(self) -> None:
        from app.db import session_scope
        from app.keys.service import any_active_key

        with session_scope(self.settings.database_url) as session:
            keyed = any_active_key(session)
        if keyed:
            print("  auth:      API keys required (Authorization: Bearer <key>)", flush=True)
        elif self.host in LOCAL_HOSTS:
            print("  auth:      open (no API keys exist); reachable from this machine only", flush=True)
        else:
            print(f"WARNING: binding {self.host} with no API keys: anyone who can reach this port can train, read "
                  "and delete. Create a key first: finetune keys create --name NAME", file=sys.stderr, flush=True)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        from app.migrate import upgrade_database

        upgrade_database(self.settings.database_url)
        self._describe()
        self._check_exposure()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        self.api = self.start_api()
        self.worker = self.start_worker()
        self.predictor = self.start_predictor()
        backoff, started = 1.0, time.monotonic()
        code = 0
        try:
            while not self.stopping:
                time.sleep(0.2)
                if self.api.poll() is not None:
                    print(f"the API process exited ({self.api.returncode}); stopping", file=sys.stderr, flush=True)
                    code = 1
                    break
                if self.worker.poll() is not None and not self.stopping:
                    # Quick crashes back off, so a broken setup does not spin.
                    backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, RESTART_BACKOFF_MAX)
                    print(f"the worker exited ({self.worker.returncode}); restarting in {backoff:.0f} s",
                          file=sys.stderr, flush=True)
                    deadline = time.monotonic() + backoff
                    while time.monotonic() < deadline and not self.stopping:
                        time.sleep(0.1)
                    if not self.stopping:
                        self.worker, started = self.start_worker(), time.monotonic()
                if self.predictor.poll() is not None and not self.stopping:  # a crash loses no job: restart
                    print(f"the predictor exited ({self.predictor.returncode}); restarting", file=sys.stderr, flush=True)
                    time.sleep(1.0)
                    self.predictor = self.start_predictor()
        finally:
            self.stop()
        return code

    def stop(self) -> None:
        print("stopping: API and worker", file=sys.stderr, flush=True)
        children = [p for p in (self.api, self.worker, self.predictor) if p is not None and p.poll() is None]
        for proc in children:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: takes pool processes along
                proc.wait()
