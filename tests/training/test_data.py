import json
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.training.batches import TrainBatches, eval_batches
from worker.training.data import prepare_data
from worker.training.datasets import load_builtin, table_from_records
from worker.training.reporting import ConfigError
from worker.training.spec import BUILTIN_DATASETS, JobSpec
from worker.training.tokenizer import CharTokenizer

from training_helpers import TINY_TRANSFORMER, make_spec

INPUTS = {"classification": ["vector", "image"], "regression": ["vector"], "causal_lm": ["tokens"]}


def spec_for(name: str, task: str, kind: str) -> JobSpec:
    model = {"vector": {"builtin": "mlp"}, "image": {"builtin": "cnn"}, "tokens": TINY_TRANSFORMER}[kind]
    return make_spec(task=task, model=model, data={"train": f"builtin:{name}"})


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_every_builtin_dataset_loads_for_its_tasks(name):
    for task in BUILTIN_DATASETS[name]:
        for kind in INPUTS[task]:
            if kind == "image" and name != "digits":
                continue  # only digits are images; the others are tables of unrelated features
            spec = spec_for(name, task, kind)
            data = prepare_data(spec, {}, kind, block_size=32 if kind == "tokens" else None)
            n_train, n_val = len(data.train["labels"]), len(data.val["labels"])
            assert n_train > 0 and n_val > 0
            assert abs(n_val / (n_train + n_val) - 0.2) < 0.05
            if task == "classification":
                assert len(data.info.labels) >= 2
                assert set(data.train["labels"].tolist()) <= set(range(len(data.info.labels)))
            if task == "causal_lm":
                assert data.train["input_ids"].shape[1] == 32
                # labels are the inputs shifted by one token
                assert torch.equal(data.train["input_ids"][:, 1:], data.train["labels"][:, :-1])


def test_digits_are_vectors_for_mlp_and_images_for_cnn():
    vec = prepare_data(spec_for("digits", "classification", "vector"), {}, "vector")
    img = prepare_data(spec_for("digits", "classification", "image"), {}, "image")
    assert vec.train["inputs"].shape[1:] == (64,)
    assert img.train["inputs"].shape[1:] == (1, 8, 8)
    assert vec.info.labels == [str(i) for i in range(10)]
    assert len(load_builtin("digits").y) == 1797  # scikit-learn's real digits


def test_standardization_is_fitted_on_the_train_split_only():
    data = prepare_data(spec_for("wine", "classification", "vector"), {}, "vector")
    train, val = data.train["inputs"], data.val["inputs"]
    assert torch.allclose(train.mean(0), torch.zeros(13), atol=1e-5)
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(13), atol=1e-4)
    assert not torch.allclose(val.mean(0), torch.zeros(13), atol=1e-3)  # fitted without the val rows
    raw = load_builtin("wine").x
    assert not np.allclose(data.info.features.mean, raw.mean(0))  # not fitted on everything either


def test_regression_targets_standardized_on_train():
    data = prepare_data(spec_for("diabetes", "regression", "vector"), {}, "vector")
    y = data.train["labels"]
    assert abs(float(y.mean())) < 1e-4 and abs(float(y.std(unbiased=False)) - 1) < 1e-3
    assert 100 < data.info.target.mean[0] < 200  # original units (disease progression)


def test_splits_are_seeded():
    def val_labels(seed):
        spec = make_spec(hyperparameters={"seed": seed})
        return prepare_data(spec, {}, "vector").val["inputs"]

    assert torch.equal(val_labels(1), val_labels(1))
    assert not torch.equal(val_labels(1), val_labels(2))


def test_train_batches_depend_only_on_seed_and_epoch():
    tensors = {"inputs": torch.arange(10.0).unsqueeze(1), "labels": torch.arange(10)}
    a = TrainBatches(tensors, 3, seed=7, device=torch.device("cpu"))
    b = TrainBatches(tensors, 3, seed=7, device=torch.device("cpu"))
    assert len(a) == 3  # the partial batch is dropped
    assert torch.equal(a.batch(1, 2)["labels"], b.batch(1, 2)["labels"])  # no state: random access works
    assert not torch.equal(a.order(0), a.order(1))
    seen = torch.cat([a.batch(0, i)["labels"] for i in range(3)])
    assert len(set(seen.tolist())) == 9


def test_eval_batches_are_padded_to_one_shape():
    tensors = {"inputs": torch.arange(7.0).unsqueeze(1), "labels": torch.arange(7)}
    batches = list(eval_batches(tensors, 3))
    assert [b["inputs"].shape[0] for b, _ in batches] == [3, 3, 3]
    assert [n for _, n in batches] == [3, 3, 1]
    assert torch.cat([b["labels"][:n] for b, n in batches]).tolist() == list(range(7))


def test_char_tokenizer_round_trip():
    tok = CharTokenizer.fit(["hello world"])
    assert tok.decode(tok.encode("hello world")) == "hello world"
    assert tok.encode("z")[0] == tok.unk_id
    assert CharTokenizer(tok.to_config()["vocab"][2:]).itos == tok.itos


def test_table_from_records_and_one_class_label():
    rows = [{"a": 1.0, "b": [2.0, 3.0], "label": "x"}, {"a": 4.0, "b": [5.0, 6.0], "label": "y"}]
    table = table_from_records(rows, "label", "data.train")
    assert table.feature_names == ["a", "b[0]", "b[1]"]
    assert table.x.tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ConfigError, match="row 2") as e:
        table_from_records([{"a": 1, "label": 0}, {"a": "oops", "label": 1}], "label", "data.train")
    assert e.value.field == "data.train"


def _uploaded(tmp_path: Path, rows: list[dict]) -> tuple[str, dict]:
    pytest.importorskip("worker.training.dataset_files")
    dataset_id = "0123456789abcdef0123456789abcdef"
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dataset_id, {dataset_id: (path, "jsonl")}


def test_uploaded_table_with_a_single_class_is_refused(tmp_path):
    dataset_id, files = _uploaded(tmp_path, [{"x": float(i), "y": 1.0, "label": "same"} for i in range(20)])
    spec = make_spec(data={"train": dataset_id})
    with pytest.raises(ConfigError, match="single class") as e:
        prepare_data(spec, files, "vector")
    assert e.value.field == "data.label_field"


def test_uploaded_text_classification(tmp_path):
    rows = [{"text": "good day" if i % 2 else "bad night", "label": "pos" if i % 2 else "neg"} for i in range(30)]
    dataset_id, files = _uploaded(tmp_path, rows)
    spec = make_spec(model=TINY_TRANSFORMER, data={"train": dataset_id, "max_length": 16})
    data = prepare_data(spec, files, "tokens", block_size=32)
    assert data.info.labels == ["neg", "pos"]
    assert data.train["input_ids"].shape[1] == 16
    first = data.train["attention_mask"][0]
    assert first.sum() in (8, 9)  # "good day" / "bad night", then padding


def test_max_length_beyond_block_size_is_a_config_error():
    spec = make_spec(task="causal_lm", model=TINY_TRANSFORMER, data={"train": "builtin:tiny_text", "max_length": 64})
    with pytest.raises(ConfigError, match="block_size") as e:
        prepare_data(spec, {}, "tokens", block_size=32)
    assert e.value.field == "data.max_length"
