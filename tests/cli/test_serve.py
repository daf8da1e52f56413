"""`finetune serve` as a user runs it: one command, a job submitted and watched, a download, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_submit_watch_download_and_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")}
    env.update(FINETUNE_HOME=str(tmp_path / "home"), FINETUNE_URL=url, PYTHONUNBUFFERED="1")
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen([BIN / "finetune", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        output = (tmp_path / "serve.log").read_text()
        assert str(tmp_path / "home") in output and "open (no API keys exist)" in output

        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({
            "task": "classification", "model": {"builtin": "mlp", "config": {"hidden_sizes": [16]}},
            "data": {"train": "builtin:digits"},
            "hyperparameters": {"epochs": 1, "batch_size": 64, "compile": False},
        }))
        run = lambda *args: subprocess.run([BIN / "finetune", *args], cwd=tmp_path, env=env,  # noqa: E731
                                           capture_output=True, text=True, timeout=300)
        submitted = run("submit", str(spec), "--watch")
        assert submitted.returncode == 0, submitted.stderr + (tmp_path / "serve.log").read_text()
        job_id = submitted.stdout.strip().splitlines()[0]
        assert "succeeded" in submitted.stdout

        listed = run("jobs", "--status", "succeeded")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[0].split("\t")[:3] == [job_id, "", "succeeded"], listed.stdout
        assert job_id not in run("jobs", "--status", "failed").stdout
        deadline = time.monotonic() + 30  # serve runs a worker on cpu,gpu and a predictor on predict
        while True:
            workers = run("workers")
            assert workers.returncode == 0, workers.stderr
            queues = sorted(line.split("\t")[1] for line in workers.stdout.splitlines())
            if queues == ["cpu,gpu", "predict"]:
                break
            assert time.monotonic() < deadline, workers.stdout  # the predictor may still be starting
            time.sleep(0.5)
        events = run("events", job_id)
        assert events.returncode == 0, events.stderr
        kinds = [line.split()[3] for line in events.stdout.splitlines()]
        assert kinds[0] == "created" and kinds[-1] == "succeeded" and "evaluation" in kinds, events.stdout
        ended = run("cancel", job_id)
        assert ended.returncode == 1 and "409" in ended.stderr and "already succeeded" in ended.stderr

        downloaded = run("download", job_id, "-o", str(tmp_path))
        assert downloaded.returncode == 0, downloaded.stderr
        with tarfile.open(downloaded.stdout.strip()) as archive:
            assert any(name.endswith("/model.safetensors") for name in archive.getnames())

        # clear errors: a bad spec names the field; an unknown job is a 404; a stopped server is said so
        spec.write_text(json.dumps({"task": "classification", "model": {"builtin": "mlp"},
                                    "data": {"train": "builtin:digits"}, "hyperparameters": {"epoch": 1}}))
        bad = run("submit", str(spec))
        assert bad.returncode == 1 and "422" in bad.stderr and "hyperparameters.epoch" in bad.stderr
        missing = run("status", "00000000-0000-0000-0000-000000000000")
        assert missing.returncode == 1 and "404" in missing.stderr

        # cancelling a running job from the CLI: it stops at its next step and ends cancelled
        spec.write_text(json.dumps({
            "task": "classification", "model": {"builtin": "mlp", "config": {"hidden_sizes": [16]}},
            "data": {"train": "builtin:digits"}, "hyperparameters": {"epochs": 1000, "compile": False},
        }))
        long_id = run("submit", str(spec)).stdout.strip()
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/jobs/{long_id}").json()["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.2)
        cancelled = run("cancel", long_id)
        assert cancelled.returncode == 0, cancelled.stderr
        watched = run("watch", long_id)
        assert watched.returncode == 1 and "cancelled" in watched.stdout

        # trying the result: serve runs a worker on the predict queue
        predicted = httpx.post(f"{url}/jobs/{job_id}/predict", json={"inputs": [[0.0] * 64]}, timeout=90)
        assert predicted.status_code == 200, predicted.text + (tmp_path / "serve.log").read_text()
        assert len(predicted.json()["outputs"][0]["probabilities"]) == 10

        children = _children(serve.pid)
        assert len(children) == 3  # the API, the worker and the predictor
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(c) for c in children)
        refused = run("status", job_id)
        assert refused.returncode == 1 and "isn't running" in refused.stderr
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
