"""Hugging Face models in the training core: heads, freezing by HF names, dropout, downloads that load,
transfer with a new head, offline loading rules. Tiny random BERTs saved locally (fast); the real
pre-trained MiniLM is fine-tuned in test_hf_minilm.py and through the API in tests/e2e/test_hf_finetune.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_helpers import dataset, tiny_bert, topic_rows, words_of
from safetensors.torch import load_file

from worker.training.config import RunConfig
from worker.training.inference import Predictor
from worker.training.reporting import ConfigError
from worker.training.spec import JobSpec

ROWS = topic_rows(96)


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = words_of(ROWS) + words_of([{"x": "alpha beta gamma delta"}])
    return tiny_bert(tmp_path_factory.mktemp("bert") / "model", words)


def hf_spec(model: str | dict, train: str, **overrides) -> JobSpec:
    spec = {
        "task": "classification",
        "model": {"huggingface": model} if isinstance(model, str) else model,
        "data": {"train": train, "max_length": 16, "validation_split": 0.25},
        "hyperparameters": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "compile": False,
                            "scheduler": "constant"},
    }
    spec.update(overrides)
    return JobSpec(**spec)


def final_dir(config_output: Path, name: str) -> Path:
    return config_output / "checkpoints" / name


def test_freeze_patterns_on_hf_names_and_a_download_that_loads(run, tmp_path: Path, bert: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    did, files = dataset(tmp_path, ROWS)
    spec = hf_spec(str(bert), did, freeze={"patterns": ["bert.embeddings.*", "bert.encoder.layer.[0-0].*"]},
                   regularization={"dropout": 0.05})
    result, rep = run(spec, datasets=files)
    assert result.status == "succeeded"
    trainable = rep.of_type("trainable_parameters")[0][3]
    assert trainable["trainable_names"] and all(
        not n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in trainable["trainable_names"])
    assert "classifier.weight" in trainable["trainable_names"]

    folder = final_dir(tmp_path / "out", result.final_checkpoint)
    original = load_file(str(bert / "model.safetensors"))
    tuned = load_file(str(folder / "hf" / "model.safetensors"))
    frozen = [k for k in original if k.startswith(("embeddings.", "encoder.layer.0."))]
    assert frozen and all(torch.equal(original[k], tuned[f"bert.{k}"]) for k in frozen)  # bitwise unchanged
    assert any(not torch.equal(original[k], tuned[f"bert.{k}"]) for k in original if k.startswith("encoder.layer.1."))

    # the hf/ folder loads in transformers and gives the service's own predictions
    model = AutoModelForSequenceClassification.from_pretrained(folder / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "hf")
    assert model.config.id2label == {0: "cooking", 1: "sports"}
    assert model.config.hidden_dropout_prob == 0.05  # the dropout override reached the config
    texts = ["football match goal today", "garlic butter in the oven"]
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, dim=-1)
    served = Predictor(folder).predict(texts)
    for row, p in zip(served, probs):
        assert row["probabilities"] == pytest.approx({"cooking": float(p[0]), "sports": float(p[1])}, abs=1e-5)
    # and the core's own state dict (resume, transfer) is the same model
    core = load_file(str(folder / "model.safetensors"))
    assert all(torch.equal(core[k], tuned[k]) for k in tuned)


def test_first_n_layers_knows_the_layer_list_and_embeddings(run, tmp_path: Path, bert: Path) -> None:
    did, files = dataset(tmp_path, ROWS)
    result, rep = run(hf_spec(str(bert), did, freeze={"first_n_layers": 1}), datasets=files)
    summary = rep.of_type("trainable_parameters")[0][3]
    frozen = summary["frozen_names"]
    assert any(n.startswith("bert.embeddings.") for n in frozen)
    assert any(n.startswith("bert.encoder.layer.0.") for n in frozen)
    assert not any(n.startswith("bert.encoder.layer.1.") for n in frozen)


def test_regression_head(run, tmp_path: Path, bert: Path) -> None:
    rows = [{"text": r["text"], "label": 10.0 if r["label"] == "sports" else -10.0} for r in ROWS]
    did, files = dataset(tmp_path, rows)
    result, rep = run(hf_spec(str(bert), did, task="regression"), datasets=files)
    assert result.status == "succeeded" and "val_mae" in result.metrics
    folder = final_dir(tmp_path / "out", result.final_checkpoint)
    assert json.loads((folder / "hf" / "config.json").read_text())["problem_type"] == "regression"
    values = Predictor(folder).predict(["football goal", "garlic oven"])
    assert all(isinstance(v["value"], float) for v in values)


def test_transfer_to_a_new_label_set_gets_a_new_head(run, tmp_path: Path, bert: Path) -> None:
    did, files = dataset(tmp_path, ROWS)
    first, _ = run(hf_spec(str(bert), did), output=tmp_path / "a", datasets=files)
    base = final_dir(tmp_path / "a", first.final_checkpoint)

    three = [{"text": r["text"], "label": ["x", "y", "z"][i % 3]} for i, r in enumerate(ROWS)]
    did2, files2 = dataset(tmp_path, three)
    spec = hf_spec({"from_job": "a-job"}, did2, freeze={"patterns": ["bert.embeddings.*"]})
    result, rep = run(spec, output=tmp_path / "b", datasets=files2, base_checkpoint=base)
    assert result.status == "succeeded"
    loaded = rep.of_type("base_model_loaded")[0][3]
    assert set(loaded["reinitialized"]) == {"classifier.weight", "classifier.bias"}
    folder = final_dir(tmp_path / "b", result.final_checkpoint)
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["kind"] == "huggingface" and config["labels"] == ["x", "y", "z"]
    original = load_file(str(bert / "model.safetensors"))
    after_a = load_file(str(base / "hf/model.safetensors"))
    after_b = load_file(str(folder / "hf/model.safetensors"))
    assert after_b["classifier.weight"].shape[0] == 3
    # B started from A's weights, not the original model's: its frozen embeddings are A's, bit for bit
    key = "embeddings.word_embeddings.weight"
    assert not torch.equal(after_a[f"bert.{key}"], original[key])
    assert torch.equal(after_b[f"bert.{key}"], after_a[f"bert.{key}"])


def test_missing_model_fails_before_training(run, tmp_path: Path) -> None:
    did, files = dataset(tmp_path, ROWS)
    with pytest.raises(ConfigError, match="not a Hugging Face model directory"):
        run(hf_spec(str(tmp_path / "nowhere"), did), datasets=files)
    with pytest.raises(ConfigError, match="hub downloads are disabled"):
        run(hf_spec("finetune-tests/no-such-model", did), datasets=files)


def test_pickled_weights_are_never_loaded(run, tmp_path: Path, bert: Path) -> None:
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(bert, pickled)
    weights = load_file(str(pickled / "model.safetensors"))
    (pickled / "model.safetensors").unlink()
    torch.save(weights, pickled / "pytorch_model.bin")  # a pickle: could run code when loaded
    did, files = dataset(tmp_path, ROWS)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        run(hf_spec(str(pickled), did), datasets=files)
