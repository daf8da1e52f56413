import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from training_helpers import TINY_TRANSFORMER, make_spec

from worker.training.data import DataInfo
from worker.training.inference import load_for_inference
from worker.training.models import build_model
from worker.training.regularization import override_dropout


def matrix_norm(run_dir, step, kind):
    weights = load_file(str(run_dir / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))
    tensors = [t for t in weights.values() if t.dim() >= 2]
    p = 1 if kind == "l1" else 2
    return sum(float(t.abs().pow(p).sum()) for t in tensors)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_penalty_lowers_the_weights_norm_and_is_reported_apart(run, tmp_path, kind):
    hp = {"max_steps": 30, "learning_rate": 0.01, "optimizer": "adam"}
    plain, plain_rep = run(make_spec(hyperparameters=hp), output=tmp_path / "plain")
    pen, rep = run(make_spec(hyperparameters=hp, regularization={kind: 0.01}), output=tmp_path / "pen")
    assert matrix_norm(tmp_path / "pen", pen.steps, kind) < 0.9 * matrix_norm(tmp_path / "plain", plain.steps, kind)
    penalty = rep.values(f"{kind}_penalty")
    assert len(penalty) == 30 and all(v > 0 for v in penalty)
    other = "l2" if kind == "l1" else "l1"
    assert not rep.values(f"{other}_penalty")
    # train_loss stays the data loss: at step 1 (same initial weights) it equals the plain run's
    assert rep.values("train_loss")[0] == pytest.approx(plain_rep.values("train_loss")[0], abs=1e-6)


def test_penalty_value_matches_its_definition(run, tmp_path):
    spec = make_spec(hyperparameters={"max_steps": 1, "learning_rate": 1e-9}, regularization={"l1": 0.001, "l2": 0.002})
    result, rep = run(spec)
    weights = load_file(str(tmp_path / "out" / "checkpoints" / "step-00000001" / "model.safetensors"))
    mats = [t for t in weights.values() if t.dim() >= 2]
    assert rep.values("l1_penalty")[0] == pytest.approx(0.001 * sum(float(t.abs().sum()) for t in mats), rel=1e-4)
    assert rep.values("l2_penalty")[0] == pytest.approx(0.002 * sum(float(t.pow(2).sum()) for t in mats), rel=1e-4)


def test_dropout_override_reaches_every_dropout_module():
    info = DataInfo(task="causal_lm", input_kind="tokens")
    config = {**TINY_TRANSFORMER["config"], "dropout": 0.1, "vocab_size": 10}
    model = build_model({"kind": "builtin", "builtin": "transformer", "config": config}, info)
    changed = override_dropout(model, 0.37)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert changed == len(drops) + 2  # plus the attention dropout of each of the 2 blocks
    assert all(m.p == 0.37 for m in drops)
    assert all(b.attn.dropout_p == 0.37 for b in model.blocks)
    assert model.config.dropout == 0.37


def test_dropout_override_is_recorded_in_the_checkpoint(run, tmp_path):
    model = {"builtin": "mlp", "config": {"hidden_sizes": [16], "dropout": 0.1}}
    result, _ = run(make_spec(model=model, hyperparameters={"max_steps": 2}, regularization={"dropout": 0.5}))
    path = tmp_path / "out" / "checkpoints" / result.final_checkpoint
    assert json.loads((path / "config.json").read_text())["model"]["config"]["dropout"] == 0.5
    loaded, _ = load_for_inference(path)
    assert [m.p for m in loaded.modules() if isinstance(m, nn.Dropout)] == [0.5]


def test_label_smoothing_changes_the_loss(run, tmp_path):
    hp = {"max_steps": 3}
    _, plain = run(make_spec(hyperparameters=hp), output=tmp_path / "plain")
    _, smooth = run(make_spec(hyperparameters=hp, regularization={"label_smoothing": 0.2}), output=tmp_path / "ls")
    # same weights at step 1 (same seed, same batch), different loss definition
    assert smooth.values("train_loss")[0] != pytest.approx(plain.values("train_loss")[0], rel=1e-4)


def test_max_grad_norm_clips_and_reports_the_norm(run):
    _, rep = run(make_spec(hyperparameters={"max_steps": 4, "learning_rate": 0.5}, regularization={"max_grad_norm": 0.01}))
    norms = rep.values("grad_norm")
    assert len(norms) == 4 and all(n > 0.01 for n in norms)  # the pre-clip norm, so clipping happened
