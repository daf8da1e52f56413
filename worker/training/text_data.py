"""Causal-LM examples whose prompt is not learned: `{"prompt", "completion"}` rows and chat `{"messages"}` rows.

Each row becomes segments of text, each either learned or not:
- prompt/completion: the prompt (not learned), then the completion (learned), then EOS when the tokenizer
  has one (learned, so generation learns to stop);
- chat: rendered with the tokenizer's chat template when it has one (the assistant turns are learned: the
  text a template adds for `messages[:i+1]` beyond `messages[:i]` + the generation prompt); otherwise the
  documented plain format, one line per message: `role: content\\n`, where only an assistant's
  `content\\n` is learned (the builtin transformer's character tokenizer has no template).
Segments are tokenized one by one and concatenated -- exactly how a prompt is tokenized at prediction time
-- then cut to `data.max_length + 1` tokens and padded to a fixed length (stable shapes for torch.compile).
Labels are aligned with the logits (labels[t] is the token after input_ids[t]) and -100 wherever the next
token is not learned (prompt, padding). Rows whose learned part is cut off entirely are dropped.

Rows with a text column (`data.text_field`) stay a corpus (datasets.corpus_from_records): every token is learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .datasets import Corpus, Source, corpus_from_records
from .reporting import ConfigError

IGNORE_INDEX = -100
Segments = list[tuple[str, bool]]


@dataclass
class Examples:
    rows: list[dict[str, Any]]


def _is_chat(row: dict[str, Any]) -> bool:
    messages = row.get("messages")
    return isinstance(messages, list) and bool(messages) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages)


def _is_pair(row: dict[str, Any]) -> bool:
    return isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str)


def causal_lm_content(rows: list[dict[str, Any]], text_field: str, where: str) -> Corpus | Examples:
    """A corpus when every row has the text column; prompt/completion or chat examples otherwise."""
    if rows and all(isinstance(r.get(text_field), str) for r in rows):
        return corpus_from_records(rows, text_field, where)
    if not rows:
        raise ConfigError(f"{where}: the dataset has no rows", field=where)
    for i, row in enumerate(rows):
        if not (_is_pair(row) or _is_chat(row)):
            raise ConfigError(f"{where}: row {i + 1} needs a text in {text_field!r}, or \"prompt\" and \"completion\" "
                              "strings, or \"messages\": [{\"role\": ..., \"content\": ...}, ...]",
                              field="data.text_field")
        if _is_chat(row) and not any(m["role"] == "assistant" for m in row["messages"]):
            raise ConfigError(f"{where}: row {i + 1}: a chat needs at least one assistant message to learn",
                              field=where)
    return Examples(rows)


# --- rows to segments ------------------------------------------------------------------------------


def _template(tokenizer: Any) -> Any:
    return getattr(tokenizer, "hf", None) if getattr(tokenizer, "chat_template", None) else None


def chat_segments(messages: list[dict[str, str]], tokenizer: Any) -> Segments:
    hf = _template(tokenizer)
    if hf is None:
        segments: Segments = []
        for m in messages:
            segments += [(f"{m['role']}: ", False), (m["content"] + "\n", m["role"] == "assistant")]
        return segments

    def render(part: list[dict[str, str]], generation_prompt: bool = False) -> str:
        if not part and not generation_prompt:
            return ""
        return hf.apply_chat_template(part, tokenize=False, add_generation_prompt=generation_prompt)

    segments, done = [], ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix, full = render(messages[:i], True), render(messages[: i + 1])
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise ConfigError("data: this tokenizer's chat template does not render conversations "
                              "incrementally; use prompt/completion rows instead", field="data.train")
        segments += [(prefix[len(done):], False), (full[len(prefix):], True)]
        done = full
    rest = render(messages)
    if rest.startswith(done) and len(rest) > len(done):
        segments.append((rest[len(done):], False))
    return segments


def segments_of(row: dict[str, Any], tokenizer: Any) -> tuple[Segments, bool]:
    """(segments, whether an EOS token ends the example)."""
    if _is_chat(row):
        return chat_segments(row["messages"], tokenizer), _template(tokenizer) is None
    return [(row["prompt"], False), (row["completion"], True)], True


def plain_text(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as text (without a tokenizer): what a character tokenizer is fitted on."""
    return ["".join(text for text, _ in segments_of(row, None)[0]) for row in rows]


# --- segments to tensors ---------------------------------------------------------------------------


def encode(row: dict[str, Any], tokenizer: Any) -> tuple[list[int], list[bool]]:
    segments, with_eos = segments_of(row, tokenizer)
    bos, eos = getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None)
    ids, learn = ([bos], [False]) if bos is not None else ([], [])
    for text, learned in segments:
        tokens = tokenizer.encode(text)
        ids += tokens
        learn += [learned] * len(tokens)
    if with_eos and eos is not None:
        ids.append(eos)
        learn.append(True)
    return ids, learn


def example_tensors(rows: list[dict[str, Any]], tokenizer: Any, seq_len: int, where: str) -> dict[str, torch.Tensor]:
    T, pad = seq_len, tokenizer.pad_id
    kept_ids, kept_labels = [], []
    for row in rows:
        ids, learn = encode(row, tokenizer)
        ids, learn = ids[: T + 1], learn[: T + 1]
        labels = [ids[t + 1] if learn[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)]
        if any(label != IGNORE_INDEX for label in labels):
            kept_ids.append(ids[:T])
            kept_labels.append(labels)
    if not kept_ids:
        raise ConfigError(f"{where}: no example has a completion (or assistant) token within data.max_length "
                          f"({T}) tokens; raise data.max_length or shorten the prompts", field="data.max_length")
    n = len(kept_ids)
    input_ids = torch.full((n, T), pad, dtype=torch.long)
    mask = torch.zeros((n, T), dtype=torch.long)
    labels = torch.full((n, T), IGNORE_INDEX, dtype=torch.long)
    for i, (x, y) in enumerate(zip(kept_ids, kept_labels)):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
        labels[i, : len(y)] = torch.tensor(y, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def prepare_examples(p: Any, train_src: Source, val_src: Source | None, split: float, seed: int) -> Any:
    """data.prepare_data for Examples; `p` is data's _Preparer (tokenizer fitting, seq_len)."""
    from .data import PreparedData, split_indices

    rows: list[dict[str, Any]] = train_src.content.rows  # type: ignore[union-attr]
    val_rows = val_src.content.rows if val_src else []  # type: ignore[union-attr]
    p.fit_text(plain_text(rows + val_rows))  # fits a character tokenizer only when there is no model's own
    every = example_tensors(rows, p.tokenizer, p.info.seq_len, "data.train")
    n = len(every["input_ids"])
    if val_src:
        train, val = every, example_tensors(val_rows, p.tokenizer, p.info.seq_len, "data.validation")
    else:
        train_idx, val_idx = split_indices(n, split, seed)
        train = {k: v[train_idx] for k, v in every.items()}
        val = {k: v[val_idx] for k, v in every.items()} if len(val_idx) else None
    return PreparedData(p.info, train, val)
