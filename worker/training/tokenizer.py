"""A character-level tokenizer for the builtin transformer: small, exact, and stored inside config.json.

Ids 0 and 1 are reserved for padding and unknown characters; the rest are the corpus's characters in
sorted order, so the same text always gives the same vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

PAD = "<pad>"
UNK = "<unk>"


class Tokenizer(Protocol):
    """What the data pipeline and inference need from a tokenizer (a Hugging Face one can be adapted)."""

    pad_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_config(self) -> dict[str, Any]: ...


class CharTokenizer:
    pad_id = 0
    unk_id = 1

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars) - {PAD, UNK})
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("a character tokenizer's vocabulary holds single characters")
        self.itos = [PAD, UNK, *self.chars]
        self.stoi = {c: i for i, c in enumerate(self.itos) if i > 1}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> CharTokenizer:
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls(chars)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, self.unk_id) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        # padding decodes to nothing; unknown ids to U+FFFD so a reader sees something was lost
        return "".join(self.itos[i] if 1 < i < len(self.itos) else ("" if i == 0 else "\ufffd") for i in ids)

    def to_config(self) -> dict[str, Any]:
        return {"type": "char", "vocab": self.itos, "pad_id": self.pad_id, "unk_id": self.unk_id}


def encode_truncated(tokenizer: Tokenizer, text: str, max_length: int) -> list[int]:
    """A classifier's input of at most max_length tokens (a Hugging Face tokenizer keeps [CLS] ... [SEP])."""
    own = getattr(tokenizer, "encode_truncated", None)
    return own(text, max_length) if own is not None else tokenizer.encode(text)[:max_length]


def tokenizer_from_config(config: dict[str, Any], directory: Path | None = None) -> Tokenizer:
    """`directory`: the checkpoint folder; a Hugging Face tokenizer's files are in its config["dir"]."""
    kind = config.get("type")
    if kind == "char":
        return CharTokenizer(config["vocab"][2:])
    if kind == "huggingface":
        if directory is None:
            raise ValueError("a Hugging Face tokenizer loads from its checkpoint folder; pass the directory")
        from .models.huggingface import tokenizer_from_dir

        return tokenizer_from_dir(Path(directory) / config["dir"])
    raise ValueError(f"unknown tokenizer type {kind!r}")
