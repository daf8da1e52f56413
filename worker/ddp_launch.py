"""Run one job on N processes with torchrun (DDP): the worker's side and each rank's side.

Worker side, in place of `run_training(config, reporter)`:

    result = run_distributed(config, reporter, nprocs=spec.resources.gpus)

starts `python -m torch.distributed.run --standalone --nproc-per-node N -m worker.ddp_launch WORKDIR` and
relays what rank 0 reports to `reporter` (the worker's own: it holds the job's lease, writes SQL rows and
uploads checkpoints), so the worker's job handling is the same for one process or many. The channel is a
JSON-lines file rank 0 appends to; a cancel travels back as a `stop` file rank 0 checks every step and
shares with the other ranks. Nothing is unpickled: the config travels as JSON.

Rank side (`python -m worker.ddp_launch WORKDIR`, started by torchrun): join the process group, rebuild the
RunConfig, run the training entry point with a reporter that forwards rank 0's calls to the channel.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from worker.training.config import RunConfig
from worker.training.reporting import CheckpointInfo, Level, Reporter, TrainingError, TrainingResult

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENTRY = "worker.training:run_training"
POLL_SECONDS = 0.1


# --- the RunConfig as JSON ------------------------------------------------------------------------------


def config_to_json(config: RunConfig) -> dict[str, Any]:
    return {
        "spec": config.spec.model_dump(mode="json"),
        "output_dir": str(config.output_dir),
        "datasets": {k: [str(p), fmt] for k, (p, fmt) in config.datasets.items()},
        "base_checkpoint": str(config.base_checkpoint) if config.base_checkpoint else None,
        "resume": config.resume,
        "compile_cache_dir": str(config.compile_cache_dir) if config.compile_cache_dir else None,
        "device": config.device,
        "allow_hub_downloads": config.allow_hub_downloads,
    }


def config_from_json(data: dict[str, Any]) -> RunConfig:
    from worker.training.spec import JobSpec

    return RunConfig(
        spec=JobSpec.model_validate(data["spec"]),
        output_dir=Path(data["output_dir"]),
        datasets={k: (Path(p), fmt) for k, (p, fmt) in data["datasets"].items()},
        base_checkpoint=Path(data["base_checkpoint"]) if data["base_checkpoint"] else None,
        resume=data["resume"],
        compile_cache_dir=Path(data["compile_cache_dir"]) if data["compile_cache_dir"] else None,
        device=data["device"],
        allow_hub_downloads=data["allow_hub_downloads"],
    )


# --- worker side ----------------------------------------------------------------------------------------


class _Relay:
    """Reads the channel file as rank 0 appends to it and replays each call on the worker's reporter."""

    def __init__(self, path: Path, reporter: Reporter) -> None:
        self.path, self.reporter = path, reporter
        self.offset = 0
        self.outcome: dict[str, Any] | None = None

    def pump(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # only whole lines: rank 0 may be mid-write
        self.offset += end
        for line in data[:end].splitlines():
            self._replay(json.loads(line))

    def _replay(self, msg: dict[str, Any]) -> None:
        call, r = msg.pop("call"), self.reporter
        if call == "metrics":
            r.metrics(msg["step"], msg["values"])
        elif call == "event":
            r.event(msg["level"], msg["type"], msg["message"], msg.get("data"))
        elif call == "progress":
            r.progress(msg["step"], msg["total_steps"], msg["epoch"])
        elif call == "checkpoint_saved":
            r.checkpoint_saved(CheckpointInfo(**{**msg["info"], "path": Path(msg["info"]["path"])}))
        elif call == "checkpoint_removed":
            r.checkpoint_removed(msg["name"])
        elif call in ("result", "error"):
            self.outcome = {"call": call, **msg}


def _die_with_parent() -> None:
    """Linux: torchrun gets SIGTERM if the worker process dies (even by SIGKILL), and stops its ranks;
    a killed worker must never leave a training run holding the GPUs."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def torchrun_command(nprocs: int, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc-per-node={nprocs}", "-m", "worker.ddp_launch", str(workdir)]


def run_distributed(config: RunConfig, reporter: Reporter, nprocs: int, *, entry: str = DEFAULT_ENTRY,
                    env: dict[str, str] | None = None, workdir: Path | None = None) -> TrainingResult:
    """Train on `nprocs` processes (one per GPU; gloo CPU processes without GPUs); rank 0 reports here."""
    own_workdir = workdir is None  # outside output_dir: a local store lists everything under the job's folder
    workdir = Path(workdir or tempfile.mkdtemp(prefix="finetune-ddp-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(config, reporter, nprocs, entry, env, workdir)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(config: RunConfig, reporter: Reporter, nprocs: int, entry: str, env: dict[str, str] | None,
         workdir: Path) -> TrainingResult:
    (workdir / "config.json").write_text(json.dumps({"config": config_to_json(config), "entry": entry}))
    channel, stop, log = workdir / "channel.jsonl", workdir / "stop", workdir / "torchrun.log"
    relay = _Relay(channel, reporter)
    child_env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with log.open("ab") as out:
        proc = subprocess.Popen(torchrun_command(nprocs, workdir), cwd=ROOT, env=child_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        while proc.poll() is None:
            relay.pump()
            if not stop.exists() and reporter.should_stop():
                stop.touch()  # rank 0 sees it at its next step and every rank stops there
            time.sleep(POLL_SECONDS)
        relay.pump()
    finally:
        if proc.poll() is None:  # the worker is going away (or the relay failed): take the ranks with it
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    outcome = relay.outcome
    if outcome and outcome["call"] == "error":
        raise TrainingError(outcome["message"], field=outcome.get("field"), type=outcome.get("type", "training_error"))
    if outcome is None or proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"distributed training over {nprocs} processes exited with {proc.returncode}:\n{tail}")
    fields = {k: v for k, v in outcome.items() if k != "call"}
    return TrainingResult(**fields)


# --- rank side ------------------------------------------------------------------------------------------


class ChannelReporter:
    """Rank 0's reporter: each call becomes one JSON line for the worker to replay."""

    def __init__(self, workdir: Path) -> None:
        self._out = (workdir / "channel.jsonl").open("a", encoding="utf-8")
        self._stop = workdir / "stop"

    def _send(self, call: str, **payload: Any) -> None:
        self._out.write(json.dumps({"call": call, **payload}, default=str) + "\n")
        self._out.flush()

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._send("metrics", step=step, values={k: float(v) for k, v in values.items()})

    def event(self, level: Level, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        self._send("event", level=level, type=type, message=message, data=data)

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        self._send("progress", step=step, total_steps=total_steps, epoch=epoch)

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        self._send("checkpoint_saved", info={**asdict(info), "path": str(info.path)})

    def checkpoint_removed(self, name: str) -> None:
        self._send("checkpoint_removed", name=name)

    def should_stop(self) -> bool:
        return self._stop.exists()

    def finish(self, result: TrainingResult) -> None:
        self._send("result", **asdict(result))

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, TrainingError):
            self._send("error", type=exc.type, message=str(exc), field=exc.field)
        else:
            self._send("error", type=type(exc).__name__, message=str(exc) or type(exc).__name__, field=None)


class _Silent:
    """The other ranks' reporter: RankZeroReporter never forwards to it, but should_stop is asked."""

    def metrics(self, *a: Any) -> None: ...
    def event(self, *a: Any, **k: Any) -> None: ...
    def progress(self, *a: Any) -> None: ...
    def checkpoint_saved(self, *a: Any) -> None: ...
    def checkpoint_removed(self, *a: Any) -> None: ...

    def should_stop(self) -> bool:
        return False


def _load_entry(entry: str) -> Callable[[RunConfig, Reporter], TrainingResult]:
    import importlib

    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    from worker.training import distributed

    workdir = Path((argv or sys.argv[1:])[0])
    payload = json.loads((workdir / "config.json").read_text())
    config = config_from_json(payload["config"])
    ctx = distributed.init_from_env(config.device)
    channel = ChannelReporter(workdir) if ctx.is_main else None
    reporter = distributed.RankZeroReporter(channel or _Silent(), ctx)
    try:
        result = _load_entry(payload["entry"])(config, reporter)
        if channel:
            channel.finish(result)
        return 0
    except BaseException as exc:
        if channel:
            channel.fail(exc)
        raise
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
