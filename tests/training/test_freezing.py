import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_spec

from worker.training.reporting import ConfigError

MLP2 = {"builtin": "mlp", "config": {"hidden_sizes": [16, 16], "dropout": 0.0}}


def weights(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))


def initial_weights(spec):
    """The weights before the first step: the model built the way the trainer builds it (same seed)."""
    from worker.training.data import prepare_data
    from worker.training.models import build_model, describe_model

    data = prepare_data(spec, {}, "vector")
    torch.manual_seed(spec.hyperparameters.seed)
    return build_model(describe_model(spec), data.info).state_dict()


def test_frozen_parameters_are_bitwise_unchanged(run, tmp_path):
    spec = make_spec(model=MLP2, freeze={"patterns": ["layers.0.*"]},
                     regularization={"weight_decay": 0.1, "l2": 0.01},
                     hyperparameters={"max_steps": 5, "optimizer": "adamw"})
    before = initial_weights(spec)
    result, rep = run(spec)
    after = weights(tmp_path / "out", result.steps)
    for name in ("layers.0.linear.weight", "layers.0.linear.bias"):
        assert torch.equal(before[name], after[name]), name
    for name in ("layers.1.linear.weight", "head.weight", "head.bias"):
        assert not torch.equal(before[name], after[name]), name
    (event,) = rep.of_type("trainable_parameters")
    data = event[3]
    assert data["total"] == sum(t.numel() for t in before.values())
    assert data["trainable"] == data["total"] - 64 * 16 - 16
    assert data["frozen_names"] == ["layers.0.linear.weight", "layers.0.linear.bias"]


def test_train_only_freezes_everything_else(run, tmp_path):
    spec = make_spec(model=MLP2, freeze={"train_only": ["head"]}, hyperparameters={"max_steps": 3})
    before = initial_weights(spec)
    result, rep = run(spec)
    after = weights(tmp_path / "out", result.steps)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"head.weight", "head.bias"}
    assert rep.of_type("trainable_parameters")[0][3]["trainable_names"] == ["head.weight", "head.bias"]


def test_first_n_layers(run, tmp_path):
    spec = make_spec(model=MLP2, freeze={"first_n_layers": 2}, hyperparameters={"max_steps": 2})
    before = initial_weights(spec)
    result, _ = run(spec)
    after = weights(tmp_path / "out", result.steps)
    assert {n for n in before if not torch.equal(before[n], after[n])} == {"head.weight", "head.bias"}


def test_first_n_layers_beyond_the_model_is_a_config_error(run):
    with pytest.raises(ConfigError, match="2 layers") as e:
        run(make_spec(model=MLP2, freeze={"first_n_layers": 3}))
    assert e.value.field == "freeze.first_n_layers"


def test_pattern_matching_nothing_names_pattern_and_real_names(run):
    with pytest.raises(ConfigError) as e:
        run(make_spec(freeze={"patterns": ["encoder.*"]}))
    assert e.value.field == "freeze.patterns"
    assert "'encoder.*'" in str(e.value) and "layers.0.linear.weight" in str(e.value)


def test_freezing_everything_is_refused(run):
    with pytest.raises(ConfigError, match="nothing would train"):
        run(make_spec(freeze={"patterns": ["*"]}))


def test_gradual_unfreezing_trains_frozen_parameters_after_n_epochs(run, tmp_path):
    spec = make_spec(model=MLP2, freeze={"patterns": ["layers.0"], "unfreeze_after_epochs": 1},
                     hyperparameters={"epochs": 2, "batch_size": 256, "checkpoint_every_steps": 1,
                                      "keep_checkpoints": 100})
    before = initial_weights(spec)
    result, rep = run(spec)
    steps_per_epoch = result.steps // 2
    end_of_epoch_1 = weights(tmp_path / "out", steps_per_epoch)
    end = weights(tmp_path / "out", result.steps)
    w = "layers.0.linear.weight"
    assert torch.equal(before[w], end_of_epoch_1[w])  # frozen during the first epoch
    assert not torch.equal(end_of_epoch_1[w], end[w])  # the optimizer picked it up afterwards
    (event,) = rep.of_type("unfrozen")
    assert event[3]["trainable"] == event[3]["total"]
