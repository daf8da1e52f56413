"""LoRA (spec.lora) through peft: only adapters (and a new head) train, base weights stay bitwise unchanged,
the exported merged model reproduces the adapter model, freezing combines with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_helpers import dataset, tiny_bert, topic_rows, words_of
from safetensors.torch import load_file
from training_helpers import TINY_TRANSFORMER

from worker.training.freezing import canonical_name
from worker.training.inference import Predictor
from worker.training.spec import JobSpec

ROWS = topic_rows(96)


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert") / "model", words_of(ROWS))


def lora_spec(bert: Path, train: str, **overrides) -> JobSpec:
    spec = {
        "task": "classification",
        "model": {"huggingface": str(bert)},
        "data": {"train": train, "max_length": 16, "validation_split": 0.25},
        "hyperparameters": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-2, "compile": False},
        "lora": {"r": 4, "alpha": 8},
    }
    spec.update(overrides)
    return JobSpec(**spec)


def test_only_adapters_and_the_head_train_and_merged_weights_match(run, tmp_path: Path, bert: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    did, files = dataset(tmp_path, ROWS)
    result, rep = run(lora_spec(bert, did), datasets=files)
    trainable = rep.of_type("trainable_parameters")[0][3]["trainable_names"]
    assert trainable and all("lora_" in n or ".classifier." in n for n in trainable), trainable
    assert any("lora_A" in n for n in trainable)

    folder = tmp_path / "out" / "checkpoints" / result.final_checkpoint
    original = load_file(str(bert / "model.safetensors"))
    state = {canonical_name(k): v for k, v in load_file(str(folder / "model.safetensors")).items()}
    for key, tensor in original.items():  # every base weight, bitwise unchanged
        assert torch.equal(state[f"bert.{key}"], tensor), key
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in state.items() if "lora_B" in k)  # adapters moved

    # adapter/ on the original model == the merged hf/ model == the service's predictions
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert (folder / "adapter" / "adapter_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(folder / "hf")
    texts = ["football goal match", "garlic butter soup today"]
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(bert, num_labels=2)
    adapted = PeftModel.from_pretrained(base, folder / "adapter").eval()
    merged = AutoModelForSequenceClassification.from_pretrained(folder / "hf").eval()
    with torch.no_grad():
        a, m = adapted(**batch).logits, merged(**batch).logits
    torch.testing.assert_close(a, m, atol=1e-5, rtol=1e-5)
    served = Predictor(folder).predict(texts)
    probs = torch.softmax(m, dim=-1)
    assert [r["probabilities"]["sports"] for r in served] == pytest.approx(probs[:, 1].tolist(), abs=1e-5)


def test_freezing_applies_to_adapters_too(run, tmp_path: Path, bert: Path) -> None:
    did, files = dataset(tmp_path, ROWS)
    result, rep = run(lora_spec(bert, did, freeze={"patterns": ["bert.encoder.layer.0.*"]}), datasets=files)
    trainable = rep.of_type("trainable_parameters")[0][3]["trainable_names"]
    assert not any(".layer.0." in n for n in trainable)
    assert any(".layer.1." in n and "lora_" in n for n in trainable)


def test_lora_on_the_builtin_transformer(run, tmp_path: Path) -> None:
    spec = JobSpec(task="causal_lm", model=TINY_TRANSFORMER, data={"train": "builtin:tiny_text", "max_length": 32},
                   hyperparameters={"max_steps": 3, "batch_size": 8, "compile": False}, lora={"r": 2})
    result, rep = run(spec)
    trainable = rep.of_type("trainable_parameters")[0][3]["trainable_names"]
    assert trainable and all("lora_" in n for n in trainable)
    folder = tmp_path / "out" / "checkpoints" / result.final_checkpoint
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    out = Predictor(folder).predict(["The "], max_new_tokens=5)
    assert len(out[0]["completion"]) == 5

    # transfer from the LoRA job: its adapters are merged into the weights the next job starts from
    after = JobSpec(**{**spec.model_dump(), "model": {"from_job": "lora-job"}, "lora": None})
    result, rep = run(after, output=tmp_path / "next", base_checkpoint=folder)
    loaded = rep.of_type("base_model_loaded")[0][3]
    assert result.status == "succeeded" and loaded["reinitialized"] == [] and loaded["loaded"] > 10
