"""One job over two CPU processes (torchrun + gloo): the worker-side launcher and the DDP pieces.

The two-process run must give the single-process result (same data, same global batch) to float tolerance,
rank 0 alone must report, a cancel must stop every rank, and a rank's error must reach the worker readably.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from worker.ddp_launch import config_from_json, config_to_json, run_distributed  # noqa: E402
from worker.training.config import RunConfig  # noqa: E402
from worker.training.reporting import CheckpointInfo, TrainingError  # noqa: E402
from worker.training.spec import JobSpec  # noqa: E402

HERE = Path(__file__).resolve().parent
ENTRY = "ddp_entry:train"


class Recorder:
    def __init__(self, stop_after_steps: int | None = None) -> None:
        self.metric_steps: list[tuple[int, dict[str, float]]] = []
        self.events: list[tuple[str, dict[str, Any] | None]] = []
        self.checkpoints: list[CheckpointInfo] = []
        self.stop_after = stop_after_steps

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metric_steps.append((step, values))

    def event(self, level: str, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((type, data))

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        pass

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        self.checkpoints.append(info)

    def checkpoint_removed(self, name: str) -> None:
        pass

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.metric_steps) >= self.stop_after


def _config(tmp_path: Path, name: str = "ddp", epochs: int = 2) -> RunConfig:
    spec = JobSpec.model_validate({
        "name": name, "task": "regression",
        "model": {"builtin": "mlp"}, "data": {"train": "builtin:diabetes"},
        "hyperparameters": {"epochs": epochs, "batch_size": 16, "learning_rate": 0.05, "compile": False, "seed": 3},
        "resources": {"gpus": 2},
    })
    return RunConfig(spec=spec, output_dir=tmp_path / "out", device="cpu")


def _distributed(config: RunConfig, reporter: Recorder):  # noqa: ANN202
    return run_distributed(config, reporter, nprocs=2, entry=ENTRY, env={"PYTHONPATH": str(HERE)})


def test_config_travels_as_json(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config.datasets = {"abc": (tmp_path / "d.jsonl", "jsonl")}
    assert config_from_json(config_to_json(config)) == config


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    from ddp_entry import train

    single = Recorder()
    one = train(_config(tmp_path / "one"), single)
    double = Recorder()
    two = _distributed(_config(tmp_path / "two"), double)

    assert (two.status, two.steps) == (one.status, one.steps) == ("succeeded", 8)
    assert math.isclose(two.metrics["train_loss"], one.metrics["train_loss"], rel_tol=1e-4, abs_tol=1e-6)
    assert [s for s, _ in double.metric_steps] == list(range(1, 9))  # rank 0 alone reports: no duplicates
    for (_, a), (_, b) in zip(single.metric_steps, double.metric_steps):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-4, abs_tol=1e-6)
    [(_, weights_one)] = [(t, d) for t, d in single.events if t == "weights"]
    [(_, weights_two)] = [(t, d) for t, d in double.events if t == "weights"]
    assert weights_two["rank_world"] == 2
    assert max(abs(a - b) for a, b in zip(weights_one["weights"], weights_two["weights"])) < 1e-5
    [info] = double.checkpoints  # relayed to the worker's reporter with a usable path
    assert info.path.is_dir() and (info.path / "weights.txt").is_file() and info.is_final


@pytest.mark.slow
def test_cancel_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    reporter = Recorder(stop_after_steps=3)
    result = _distributed(_config(tmp_path, epochs=50), reporter)
    assert result.status == "cancelled"
    assert 3 <= result.steps < 50 * 4  # stopped soon after the request, not at the end


@pytest.mark.slow
def test_a_ranks_error_reaches_the_worker_readably(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="refused on purpose") as caught:
        _distributed(_config(tmp_path, name="fail-on-purpose"), Recorder())
    assert caught.value.field == "hyperparameters.batch_size" and caught.value.type == "invalid_config"


def _core_config(tmp_path: Path) -> RunConfig:
    spec = JobSpec.model_validate({
        "name": "ddp-core", "task": "classification",
        "model": {"builtin": "mlp", "config": {"hidden_sizes": [16], "dropout": 0.0}},
        "data": {"train": "builtin:wine", "validation_split": 0.2},
        "hyperparameters": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01, "compile": False, "seed": 0},
        "resources": {"gpus": 2},
    })
    return RunConfig(spec=spec, output_dir=tmp_path / "out", device="cpu")


@pytest.mark.slow
def test_the_training_core_on_two_gloo_processes_matches_one_process(tmp_path: Path) -> None:
    """The real recipe (run_training) under torchrun: same curves and metrics as one process, one reporter."""
    from worker.training import run_training

    single, double = Recorder(), Recorder()
    one = run_training(_core_config(tmp_path / "one"), single)
    two = run_distributed(_core_config(tmp_path / "two"), double, nprocs=2)
    assert two.status == one.status == "succeeded" and two.steps == one.steps
    for name in ("train_loss", "val_loss", "val_accuracy"):
        assert math.isclose(two.metrics[name], one.metrics[name], rel_tol=1e-3, abs_tol=1e-5), name
    assert [s for s, _ in double.metric_steps] == [s for s, _ in single.metric_steps]  # rank 0 only
    assert [c.name for c in double.checkpoints] == [c.name for c in single.checkpoints]
    assert all(c.path.is_dir() for c in double.checkpoints if c.name == two.final_checkpoint)
