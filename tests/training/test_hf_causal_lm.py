"""Causal LM on prompt/completion and chat rows: only completion (assistant) tokens are learned, for a tiny
Hugging Face GPT-2 built here and for the builtin transformer; generation after training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_helpers import arithmetic_rows, dataset, tiny_gpt2, words_of
from training_helpers import TINY_TRANSFORMER

from worker.training.data import IGNORE_INDEX, prepare_data
from worker.training.inference import Predictor
from worker.training.models import block_size, describe_model, input_kind, model_tokenizer
from worker.training.reporting import ConfigError
from worker.training.spec import JobSpec
from worker.training.text_data import chat_segments

ROWS = arithmetic_rows(128)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "model", words_of(ROWS) + ["user", "assistant", ":"])


def lm_spec(model: dict, train: str, **hp) -> JobSpec:
    hyper = {"epochs": 4, "batch_size": 16, "learning_rate": 1e-2, "compile": False, "scheduler": "constant"}
    hyper.update(hp)
    return JobSpec(task="causal_lm", model=model, data={"train": train, "max_length": 12, "validation_split": 0.25},
                   hyperparameters=hyper)


def prepared(spec: JobSpec, files: dict):
    d = describe_model(spec)
    return prepare_data(spec, files, input_kind(d), block_size=block_size(d), tokenizer=model_tokenizer(d))


def test_labels_cover_the_completion_and_eos_only(tmp_path: Path, gpt2: Path) -> None:
    did, files = dataset(tmp_path, [{"prompt": "two plus three is", "completion": " five"}] * 4)
    data = prepared(lm_spec({"huggingface": str(gpt2)}, did), files)
    tok = data.info.tokenizer
    ids, labels, mask = data.train["input_ids"][0], data.train["labels"][0], data.train["attention_mask"][0]
    learned = [(t, int(labels[t])) for t in range(len(labels)) if labels[t] != IGNORE_INDEX]
    # inputs: two plus three is five <eos>; learned: after "is" comes "five", after "five" comes EOS
    assert [tok.hf.convert_ids_to_tokens(y) for _, y in learned] == ["five", "<|endoftext|>"]
    assert [t for t, _ in learned] == [3, 4]
    assert mask.tolist() == [1] * 6 + [0] * 6  # the 6 tokens, then padding


def test_gpt2_prompt_completion_learns_and_generates(run, tmp_path: Path, gpt2: Path) -> None:
    from transformers import AutoModelForCausalLM

    did, files = dataset(tmp_path, ROWS)
    result, rep = run(lm_spec({"huggingface": str(gpt2)}, did), datasets=files)
    losses = rep.values("train_loss")
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    folder = tmp_path / "out" / "checkpoints" / result.final_checkpoint
    out = Predictor(folder).predict(["one plus two is"], max_new_tokens=2)
    assert out[0]["text"].startswith("one plus two is") and out[0]["completion"].strip()
    # hf/ loads as a causal LM (GPT-2's tied output weights saved once) and matches the core's logits
    model = AutoModelForCausalLM.from_pretrained(folder / "hf").eval()
    predictor = Predictor(folder)
    ids = torch.tensor([predictor.info.tokenizer.encode("one plus two is")])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, predictor.model(input_ids=ids).logits)


def test_builtin_transformer_masks_prompts_and_chat_roles(tmp_path: Path) -> None:
    pairs = [{"prompt": "ab", "completion": "cd"}]
    chats = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    decoded = []
    for rows in (pairs, chats):
        did, files = dataset(tmp_path, rows)
        spec = JobSpec(task="causal_lm", model=TINY_TRANSFORMER, data={"train": did, "max_length": 30,
                                                                         "validation_split": 0.0})
        data = prepared(spec, files)
        tok, ids, labels = data.info.tokenizer, data.train["input_ids"][0], data.train["labels"][0]
        decoded.append((tok.decode(ids.tolist()), tok.decode([int(y) for y in labels if y != IGNORE_INDEX])))
    assert decoded[0] == ("abcd", "cd")  # no EOS in the character vocabulary
    assert decoded[1] == ("user: hi\nassistant: yo\n", "yo\n")  # the documented role-prefixed format


def test_chat_template_learns_the_assistant_turns() -> None:
    class Template:  # a tokenizer with a chat template (the HfTokenizer surface text_data uses)
        chat_template = "yes"

        class hf:
            @staticmethod
            def apply_chat_template(messages, tokenize=False, add_generation_prompt=False):
                text = "".join(f"<{m['role']}>{m['content']}</s>" for m in messages)
                return text + ("<assistant>" if add_generation_prompt else "")

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    segments = chat_segments(messages, Template())
    assert segments == [("<system>be brief</s><user>hi</s><assistant>", False), ("hello</s>", True),
                        ("<user>bye</s>", False)]


def test_rows_without_text_or_pairs_are_refused(tmp_path: Path) -> None:
    did, files = dataset(tmp_path, [{"prompt": "a", "answer": "b"}])
    with pytest.raises(ConfigError, match="row 1 needs"):
        prepared(lm_spec(TINY_TRANSFORMER, did), files)


def test_a_stopped_gpt2_job_resumes_from_its_checkpoint(run, tmp_path: Path, gpt2: Path) -> None:
    from training_helpers import RecordingReporter

    did, files = dataset(tmp_path, ROWS)
    spec = lm_spec({"huggingface": str(gpt2)}, did, epochs=1, max_steps=4, checkpoint_every_steps=2)
    stopped, _ = run(spec, reporter=RecordingReporter(stop_at_step=2), datasets=files)
    assert stopped.status == "cancelled"
    result, rep = run(spec, datasets=files)  # the same output folder: resumes (tied weights load back)
    assert rep.of_type("resumed")[0][3]["step"] == 2
    assert result.status == "succeeded" and result.steps == 4
