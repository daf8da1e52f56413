import pytest
from training_helpers import RecordingReporter, make_spec

from worker.training.reporting import ConfigError, TrainingError

LM = {"builtin": "transformer", "config": {"n_layer": 2, "n_head": 2, "n_embd": 48, "block_size": 32, "dropout": 0.0}}


def test_digits_mlp_learns(run):
    spec = make_spec(model={"builtin": "mlp", "config": {"hidden_sizes": [64], "dropout": 0.1}},
                     hyperparameters={"epochs": 4, "learning_rate": 0.003, "scheduler": "cosine", "log_every_steps": 10})
    result, rep = run(spec)
    assert result.status == "succeeded"
    assert result.metrics["val_accuracy"] > 0.85  # chance is 0.1
    assert len(rep.of_type("evaluation")) == 4  # once per epoch
    types = [e[1] for e in rep.events]
    for expected in ("started", "device", "trainable_parameters", "evaluation", "checkpoint_saved", "finished"):
        assert expected in types
    assert types[0] == "started" and types[-1] == "finished"
    assert rep.progress_calls == result.steps  # progress after every step
    assert [s for s, _ in rep.series("train_loss")] == list(range(10, result.steps, 10)) + [result.steps]


def test_digits_cnn_learns(run):
    spec = make_spec(model={"builtin": "cnn", "config": {"channels": [8, 16], "hidden_size": 32, "dropout": 0.0}},
                     hyperparameters={"epochs": 3, "learning_rate": 0.005, "optimizer": "adam", "log_every_steps": 10})
    result, _ = run(spec)
    assert result.metrics["val_accuracy"] > 0.7


def test_diabetes_regression_reports_mae_in_original_units(run):
    spec = make_spec(task="regression", data={"train": "builtin:diabetes"},
                     hyperparameters={"epochs": 6, "learning_rate": 0.01, "log_every_steps": 10})
    result, rep = run(spec)
    mae = rep.values("val_mae")
    assert mae[-1] < mae[0]
    assert 30 < result.metrics["val_mae"] < 70  # disease-progression units; predicting the mean gives ~65
    assert result.metrics["val_rmse"] >= result.metrics["val_mae"]


def test_tiny_text_transformer_loss_falls(run):
    spec = make_spec(task="causal_lm", model=LM, data={"train": "builtin:tiny_text", "validation_split": 0.1},
                     hyperparameters={"max_steps": 60, "batch_size": 16, "learning_rate": 0.003, "log_every_steps": 10,
                                      "eval_every_steps": 30})
    result, rep = run(spec)
    losses = rep.values("train_loss")
    assert losses[-1] < 0.75 * losses[0]
    ppl = rep.values("val_perplexity")
    assert len(ppl) >= 2 and ppl[-1] < ppl[0] and ppl[-1] < 20  # uniform over ~56 characters would be 56


def test_gradient_accumulation_matches_a_larger_batch(run, tmp_path):
    base = {"max_steps": 4, "optimizer": "sgd", "learning_rate": 0.1}
    _, big = run(make_spec(hyperparameters={**base, "batch_size": 32}), output=tmp_path / "a")
    _, acc = run(make_spec(hyperparameters={**base, "batch_size": 16, "gradient_accumulation_steps": 2}),
                 output=tmp_path / "b")
    # with equal micro-batches, the mean of micro-batch means is the big batch's mean: same trajectory
    assert acc.values("train_loss") == pytest.approx(big.values("train_loss"), abs=1e-5)


def test_early_stopping_triggers(run):
    # a learning rate that overfits the tiny split quickly, evaluated every step, patience 2
    spec = make_spec(data={"train": "builtin:wine", "validation_split": 0.3},
                     model={"builtin": "mlp", "config": {"hidden_sizes": [256], "dropout": 0.0}},
                     hyperparameters={"epochs": 200, "batch_size": 16, "learning_rate": 0.05, "optimizer": "adam",
                                      "eval_every_steps": 1, "early_stopping_patience": 2})
    result, rep = run(spec)
    assert result.status == "early_stopped"
    assert result.steps < 200 * 7
    (event,) = rep.of_type("early_stop")
    val = rep.values("val_loss")
    assert min(val[-2:]) >= event[3]["best_val_loss"] == min(val)
    assert result.best_checkpoint is not None and result.final_checkpoint is not None


def test_nan_loss_fails_naming_the_step(run):
    spec = make_spec(task="regression", data={"train": "builtin:diabetes"},
                     hyperparameters={"optimizer": "sgd", "learning_rate": 10.0, "max_steps": 50, "log_every_steps": 10})
    with pytest.raises(TrainingError, match=r"NaN or infinite at step \d+") as e:
        run(spec)
    assert e.value.type == "nonfinite_loss"
    step = int(str(e.value).split("at step ")[1].split(";")[0])
    assert 1 <= step <= 10  # found at the first log, named precisely


def test_cancel_stops_promptly_without_final_checkpoint(run, tmp_path):
    rep = RecordingReporter(stop_at_step=3)
    result, _ = run(make_spec(hyperparameters={"epochs": 5}), reporter=rep)
    assert result.status == "cancelled" and result.steps == 3
    assert result.final_checkpoint is None
    assert not (tmp_path / "out" / "checkpoints").exists() or not any((tmp_path / "out" / "checkpoints").iterdir())


def test_early_stopping_without_validation_is_a_config_error(run):
    spec = make_spec(data={"validation_split": 0.0}, hyperparameters={"early_stopping_patience": 2})
    with pytest.raises(ConfigError) as e:
        run(spec)
    assert e.value.field == "hyperparameters.early_stopping_patience"


def test_accumulation_beyond_an_epoch_is_a_config_error(run):
    spec = make_spec(hyperparameters={"batch_size": 512, "gradient_accumulation_steps": 8})
    with pytest.raises(ConfigError) as e:
        run(spec)
    assert e.value.field == "hyperparameters.gradient_accumulation_steps"


def test_seeded_runs_are_reproducible(run, tmp_path):
    spec = make_spec(model={"builtin": "mlp", "config": {"hidden_sizes": [16], "dropout": 0.3}},
                     hyperparameters={"max_steps": 8})
    _, a = run(spec, output=tmp_path / "a")
    _, b = run(spec, output=tmp_path / "b")
    assert a.values("train_loss") == b.values("train_loss")
