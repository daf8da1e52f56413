"""Fault-injection harness: the end-to-end stack (real uvicorn + Celery workers, tests/e2e/conftest.py),
plus a Redis server of our own that a test may stop and start, and a TCP proxy in front of PostgreSQL
that a test may cut and restore. The machine's shared Redis and PostgreSQL are never touched."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


e2e = _load("finetune_faults_e2e_harness", ROOT / "tests" / "e2e" / "conftest.py")
root = _load("finetune_faults_root_conftest", ROOT / "tests" / "conftest.py")
Stack, free_port, tail = e2e.Stack, e2e.free_port, e2e.tail


class RedisServer:
    """A throwaway redis-server on a free port, without persistence: a restart loses every message."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.tmp = free_port(), tmp
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for the broker-restart test"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.tmp)],
                                     stdout=(self.tmp / "redis.log").open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start:\n{tail(self.tmp / 'redis.log')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # an abrupt loss, like a crashed broker
            self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class TcpProxy:
    """Forwards a local port to PostgreSQL; cut() refuses new connections and drops the open ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            listener.close()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close(), upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    root.require_service("PostgreSQL", root.PG_HOST, root.PG_PORT)
    proxy = TcpProxy((root.PG_HOST, root.PG_PORT))
    proxy.restore()
    yield proxy
    proxy.cut()


@pytest.fixture
def postgres_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh PostgreSQL database and the API; `make(broker_url=..., via=proxy)` starts it. Workers are
    started by the test."""
    from app.migrate import upgrade_database

    admin = root.PG_ADMIN_URL
    root.require_service("PostgreSQL", root.PG_HOST, root.PG_PORT)
    db_url = root.create_postgres_database(admin)
    upgrade_database(db_url)
    stacks: list[Any] = []

    def make(broker_url: str, proxy: TcpProxy | None = None, **env: str) -> Any:
        url = db_url if proxy is None else db_url.replace(f":{root.PG_PORT}/", f":{proxy.port}/")
        stack = Stack("postgres", tmp_path, {"FINETUNE_HOME": str(tmp_path / "home"),
                                             "FINETUNE_ARTIFACTS": str(tmp_path / "artifacts"),
                                             "FINETUNE_DATABASE_URL": url, "FINETUNE_BROKER_URL": broker_url, **env})
        stacks.append(stack)
        stack.start_api()
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            stack.close()
        from app.db import reset_engines

        reset_engines()
        root.drop_postgres_database(admin, db_url)

