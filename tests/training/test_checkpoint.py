import json

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import RecordingReporter, make_spec

from worker.training.checkpoint import latest_resumable, list_checkpoints, load_training_state
from worker.training.config import RunConfig
from worker.training.inference import load_for_inference, predict
from worker.training.reporting import ConfigError
from worker.training.spec import JobSpec

LM = {"builtin": "transformer", "config": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 24, "dropout": 0.1}}


def test_layout_and_config(run, tmp_path):
    result, rep = run(make_spec(hyperparameters={"max_steps": 4, "checkpoint_every_steps": 2}))
    root = tmp_path / "out" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002", "step-00000004"]
    path = root / "step-00000004"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "training_state.pt"]
    config = json.loads((path / "config.json").read_text())
    for key in ("format_version", "model", "task", "input", "labels", "feature_standardization",
                "target_standardization", "tokenizer", "step", "epoch", "metrics", "spec"):
        assert key in config, key
    assert config["model"] == {"kind": "builtin", "builtin": "mlp",
                               "config": {"hidden_sizes": [16], "dropout": 0.0, "activation": "relu"}}
    assert config["input"]["num_features"] == 64 and config["labels"] == [str(i) for i in range(10)]
    assert len(config["feature_standardization"]["mean"]) == 64
    state = load_training_state(path)  # weights_only=True loads it: tensors and plain values only
    assert state["step"] == 4 and "state" in state["optimizer"]
    info = rep.saved[-1]
    assert (info.name, info.step, info.is_final) == ("step-00000004", 4, True)
    import hashlib
    assert info.sha256 == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert result.final_checkpoint == "step-00000004"


def test_keep_last_k_but_never_the_best(run, tmp_path):
    # val loss rises after the first evaluation with this learning rate, so the best stays early
    spec = make_spec(data={"train": "builtin:wine", "validation_split": 0.3},
                     model={"builtin": "mlp", "config": {"hidden_sizes": [256], "dropout": 0.0}},
                     hyperparameters={"max_steps": 40, "batch_size": 16, "learning_rate": 0.05, "optimizer": "adam",
                                      "eval_every_steps": 2, "checkpoint_every_steps": 2, "keep_checkpoints": 2})
    result, rep = run(spec)
    names = [p.name for _, p in list_checkpoints(tmp_path / "out")]
    best = result.best_checkpoint
    assert best == min(rep.saved, key=lambda i: i.metrics.get("val_loss", 1e9)).name
    assert names[-2:] == ["step-00000038", "step-00000040"]
    assert best in names and len(names) == (2 if best in names[-2:] else 3)
    assert set(rep.removed) == {i.name for i in rep.saved} - set(names)


def test_partial_checkpoint_is_ignored_and_removed(run, tmp_path):
    root = tmp_path / "out" / "checkpoints"
    (root / ".tmp-step-00000009-abc").mkdir(parents=True)
    (root / ".tmp-step-00000009-abc" / "model.safetensors").write_bytes(b"half")
    (root / "step-00000007").mkdir()  # no files: not complete, never resumed from
    assert latest_resumable(tmp_path / "out") is None
    result, rep = run(make_spec(hyperparameters={"max_steps": 2}))
    assert not rep.of_type("resumed") and result.steps == 2
    assert not (root / ".tmp-step-00000009-abc").exists()


def _resume_spec(**hp):
    return make_spec(task="causal_lm", model=LM, data={"train": "builtin:tiny_text"},
                     hyperparameters={"max_steps": 12, "batch_size": 8, "scheduler": "cosine", "warmup_steps": 3,
                                      "learning_rate": 0.003, "checkpoint_every_steps": 5, **hp},
                     regularization={"max_grad_norm": 1.0})


def test_exact_resume_after_cancel(run, tmp_path):
    # dropout 0.1 in the model: resuming must restore the RNG too, not only weights and optimizer
    spec = _resume_spec()
    _, full = run(spec, output=tmp_path / "full")
    stopped, first = run(spec, reporter=RecordingReporter(stop_at_step=7), output=tmp_path / "resumed")
    assert stopped.status == "cancelled" and stopped.steps == 7
    result, second = run(spec, output=tmp_path / "resumed")
    (event,) = second.of_type("resumed")
    assert event[3]["step"] == 5 and event[3]["checkpoint"] == "step-00000005"
    assert result.steps == 12
    assert [s for s, _ in second.series("train_loss")] == list(range(6, 13))
    assert second.values("train_loss") == pytest.approx(full.values("train_loss")[5:], rel=1e-5, abs=1e-6)
    assert first.values("train_loss")[:5] == pytest.approx(full.values("train_loss")[:5], rel=1e-6)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-00000012" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "step-00000012" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_exact_resume_after_a_crash_across_an_epoch_boundary(run, tmp_path):
    class Crash(RecordingReporter):
        def metrics(self, step, values):
            super().metrics(step, values)
            if step == 14:
                raise KeyboardInterrupt  # the worker process dies

    spec = make_spec(model={"builtin": "mlp", "config": {"hidden_sizes": [16], "dropout": 0.2}},
                     hyperparameters={"epochs": 2, "batch_size": 128, "checkpoint_every_steps": 4})
    _, full = run(spec, output=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(spec, reporter=Crash(), output=tmp_path / "crashed")
    _, rest = run(spec, output=tmp_path / "crashed")
    assert rest.of_type("resumed")[0][3]["step"] == 12
    n = len(full.values("train_loss"))
    assert rest.values("train_loss") == pytest.approx(full.values("train_loss")[12:], rel=1e-5)
    assert rest.values("val_loss") == pytest.approx(full.values("val_loss")[-1:], rel=1e-5) and n == 22


def test_resuming_a_different_job_is_refused(run, tmp_path):
    run(make_spec(hyperparameters={"max_steps": 2}))
    with pytest.raises(ConfigError, match="different hyperparameters"):
        run(make_spec(hyperparameters={"max_steps": 2, "learning_rate": 0.5}))


def test_predict_classification_and_regression(run, tmp_path):
    result, _ = run(make_spec(hyperparameters={"epochs": 2, "learning_rate": 0.01}), output=tmp_path / "c")
    path = tmp_path / "c" / "checkpoints" / result.final_checkpoint
    from worker.training.datasets import load_builtin

    digits = load_builtin("digits")
    preds = predict(path, [digits.x[i].tolist() for i in range(40)])
    assert sum(p["label"] == digits.y[i] for i, p in enumerate(preds)) >= 28
    assert abs(sum(preds[0]["probabilities"].values()) - 1) < 1e-5 and set(preds[0]["probabilities"]) == set("0123456789")

    spec = make_spec(task="regression", data={"train": "builtin:diabetes"}, hyperparameters={"epochs": 3})
    result, _ = run(spec, output=tmp_path / "r")
    diabetes = load_builtin("diabetes")
    values = [p["value"] for p in predict(tmp_path / "r" / "checkpoints" / result.final_checkpoint, diabetes.x[:5].tolist())]
    assert all(25 < v < 350 for v in values)  # original units, not standardized


def test_predict_generates_text_and_load_for_inference(run, tmp_path):
    spec = _resume_spec(max_steps=3, checkpoint_every_steps=None)
    result, _ = run(spec)
    path = tmp_path / "out" / "checkpoints" / result.final_checkpoint
    model, config = load_for_inference(path)
    assert not model.training and config["tokenizer"]["type"] == "char"
    (out,) = predict(path, ["The river "], max_new_tokens=12)
    assert out["text"].startswith("The river ") and len(out["completion"]) == 12
    again = predict(path, ["The river "], max_new_tokens=12, temperature=0.8, seed=3)
    assert again == predict(path, ["The river "], max_new_tokens=12, temperature=0.8, seed=3)


def test_from_job_loads_matching_tensors_and_reinitializes_the_head(run, tmp_path):
    base, _ = run(make_spec(hyperparameters={"epochs": 1}), output=tmp_path / "base")
    base_dir = tmp_path / "base" / "checkpoints" / base.final_checkpoint
    base_weights = load_file(str(base_dir / "model.safetensors"))
    # a new label set: breast_cancer has 2 classes, but 30 features instead of 64, so only the
    # hidden layer's bias fits; use digits again with a frozen body to see a clean transfer
    spec = JobSpec(task="classification", model={"from_job": "0" * 32, "checkpoint": "best"},
                   data={"train": "builtin:digits"}, freeze={"train_only": ["head"]},
                   hyperparameters={"max_steps": 3, "compile": False})
    result, rep = run(spec, output=tmp_path / "new", base_checkpoint=base_dir)
    (event,) = rep.of_type("base_model_loaded")
    assert event[3]["loaded"] == 4 and event[3]["reinitialized"] == []
    new = load_file(str(tmp_path / "new" / "checkpoints" / result.final_checkpoint / "model.safetensors"))
    assert torch.equal(new["layers.0.linear.weight"], base_weights["layers.0.linear.weight"])

    spec = JobSpec(task="classification", model={"from_job": "0" * 32}, data={"train": "builtin:breast_cancer"},
                   hyperparameters={"max_steps": 3, "compile": False})
    _, rep = run(spec, output=tmp_path / "other", base_checkpoint=base_dir)
    data = rep.of_type("base_model_loaded")[0][3]
    assert data["loaded"] == 1 and "head.weight" in data["reinitialized"]


def test_from_job_without_base_checkpoint_is_a_config_error(run):
    spec = JobSpec(task="classification", model={"from_job": "x"}, data={"train": "builtin:digits"})
    with pytest.raises(ConfigError) as e:
        run(spec)
    assert e.value.field == "model.from_job"
