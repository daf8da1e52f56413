"""torch.compile on the builtin models: same numbers as eager, a clean fall-back, no needless recompiles.

These are the slow tests of the directory (Inductor compiles C++ on the CPU); they share one cache.
"""

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_spec

import worker.training.compile as compile_module

MLP = {"builtin": "mlp", "config": {"hidden_sizes": [32], "dropout": 0.2}}  # fallback_random: same masks
# 1437 train rows / 64 leaves a partial batch (dropped) and 360 val rows / 64 a padded one: shapes stay fixed
HP = {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "optimizer": "adamw", "log_every_steps": 1}


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def test_compiled_matches_eager_and_saves_plain_keys(run, tmp_path, compile_cache, fresh_dynamo):
    eager, eager_rep = run(make_spec(model=MLP, hyperparameters=HP), output=tmp_path / "eager")
    compiled, rep = run(make_spec(model=MLP, hyperparameters={**HP, "compile": True}),
                        output=tmp_path / "compiled", compile_cache_dir=compile_cache)
    assert not rep.of_type("compile_failed"), rep.of_type("compile_failed")
    (event,) = rep.of_type("compile")
    assert event[3]["seconds"] > 0
    assert rep.values("train_loss") == pytest.approx(eager_rep.values("train_loss"), rel=1e-4, abs=1e-5)
    assert compiled.metrics["val_loss"] == pytest.approx(eager.metrics["val_loss"], rel=1e-4)
    # one graph for training and one for evaluation, across two epochs and two kinds of batch
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    weights = load_file(str(tmp_path / "compiled" / "checkpoints" / compiled.final_checkpoint / "model.safetensors"))
    assert weights and not any("_orig_mod" in k for k in weights)
    assert (compile_cache / "inductor").is_dir() and any((compile_cache / "inductor").rglob("*"))


def test_failing_compilation_falls_back_to_eager(run, tmp_path, monkeypatch, fresh_dynamo):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(compile_module, "backend", lambda: broken_backend)
    _, eager = run(make_spec(model=MLP, hyperparameters={**HP, "epochs": 1}), output=tmp_path / "eager")
    result, rep = run(make_spec(model=MLP, hyperparameters={**HP, "epochs": 1, "compile": True}),
                      output=tmp_path / "fallback")
    assert result.status == "succeeded"
    (event,) = rep.of_type("compile_failed")
    assert event[0] == "warning" and "no C++ compiler here" in event[3]["reason"]
    assert not rep.of_type("compile")
    # the failed compiled step was re-run eagerly: the whole run matches a plain eager one
    assert rep.values("train_loss") == pytest.approx(eager.values("train_loss"), rel=1e-6)


def test_compile_failing_only_at_evaluation_falls_back_there(run, tmp_path, monkeypatch, fresh_dynamo):
    calls = {"n": 0}

    def second_graph_fails(gm, example_inputs):
        calls["n"] += 1
        if calls["n"] > 1:  # the training graph compiles; the evaluation graph does not
            raise RuntimeError("unsupported op in eval")
        return gm.forward  # run the captured graph as is (an "eager" backend)

    monkeypatch.setattr(compile_module, "backend", lambda: second_graph_fails)
    result, rep = run(make_spec(model=MLP, hyperparameters={**HP, "epochs": 1, "compile": True}))
    assert result.status == "succeeded" and "val_accuracy" in result.metrics
    assert len(rep.of_type("compile")) == 1 and len(rep.of_type("compile_failed")) == 1
