"""From raw datasets to tensors: seeded splits, standardization fitted on the train split, label
encoding, tokenization; and DataInfo, everything inference needs to treat new inputs the same way.

Batch convention (shared by every model the core trains, builtin or Hugging Face):
- a batch is a dict of tensors; every key except `labels` is passed to the model as a keyword argument;
- vector models take `inputs` (B, F) float; image models take `inputs` (B, C, H, W) float;
- token models take `input_ids` (B, T) long and, for padded text, `attention_mask` (B, T) (1 = real token);
- `labels`: classification (B,) long class ids; regression (B,) float (standardized); causal_lm (B, T) long,
  already aligned with the logits (labels[:, t] is the token after input_ids[:, t]), -100 ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .datasets import Corpus, InputKind, Source, Table, TextRows, load_source
from .reporting import ConfigError
from .spec import JobSpec
from .tokenizer import CharTokenizer, Tokenizer, encode_truncated, tokenizer_from_config

IGNORE_INDEX = -100
Tensors = dict[str, torch.Tensor]


@dataclass
class Standardization:
    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, x: np.ndarray, per_feature: bool = True) -> Standardization:
        mean = x.mean(axis=0) if per_feature else np.array([x.mean()])
        std = x.std(axis=0) if per_feature else np.array([x.std()])
        std = np.where(std < 1e-8, 1.0, std)  # a constant feature stays constant instead of dividing by 0
        return cls([float(m) for m in mean], [float(s) for s in std])

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x - np.asarray(self.mean)) / np.asarray(self.std)


@dataclass
class DataInfo:
    """What a model is built from and what a checkpoint stores to treat new inputs like training ones."""

    task: str
    input_kind: InputKind
    num_features: int | None = None
    feature_names: list[str] | None = None
    image_shape: tuple[int, int, int] | None = None
    seq_len: int | None = None
    labels: list[Any] | None = None  # class names; index = class id
    features: Standardization | None = None
    target: Standardization | None = None  # regression targets are trained standardized
    tokenizer: Tokenizer | None = None

    @property
    def num_outputs(self) -> int | None:
        if self.task == "classification":
            return len(self.labels or [])
        return 1 if self.task == "regression" else None

    def to_config(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "input": {
                "kind": self.input_kind,
                "num_features": self.num_features,
                "feature_names": self.feature_names,
                "image_shape": list(self.image_shape) if self.image_shape else None,
                "seq_len": self.seq_len,
            },
            "labels": self.labels,
            "feature_standardization": vars(self.features) if self.features else None,
            "target_standardization": vars(self.target) if self.target else None,
            "tokenizer": self.tokenizer.to_config() if self.tokenizer else None,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> DataInfo:
        """`directory`: the checkpoint folder, where a Hugging Face tokenizer's files are."""
        inp = config["input"]
        fs, ts, tok = config.get("feature_standardization"), config.get("target_standardization"), config.get("tokenizer")
        return cls(
            task=config["task"],
            input_kind=inp["kind"],
            num_features=inp.get("num_features"),
            feature_names=inp.get("feature_names"),
            image_shape=tuple(inp["image_shape"]) if inp.get("image_shape") else None,
            seq_len=inp.get("seq_len"),
            labels=config.get("labels"),
            features=Standardization(**fs) if fs else None,
            target=Standardization(**ts) if ts else None,
            tokenizer=tokenizer_from_config(tok, directory) if tok else None,
        )


@dataclass
class PreparedData:
    info: DataInfo
    train: Tensors
    val: Tensors | None


def num_rows(tensors: Tensors) -> int:
    return len(next(iter(tensors.values())))


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded (train, validation) split; validation gets round(n * fraction) rows, at least one."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(max(1, round(n * fraction)), n - 1) if fraction > 0 and n >= 2 else 0
    return perm[n_val:], perm[:n_val]


def _label_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


def _encode_labels(y: list[Any], labels: list[Any], where: str) -> torch.Tensor:
    index = {v: i for i, v in enumerate(labels)}
    unknown = [v for v in y if v not in index]
    if unknown:
        raise ConfigError(f"{where}: label {unknown[0]!r} does not occur in the training data", field=where)
    return torch.tensor([index[v] for v in y], dtype=torch.long)


def _regression_targets(y: list[Any], where: str) -> np.ndarray:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in y):
        raise ConfigError(f"{where}: regression labels must be numbers", field="data.label_field")
    return np.asarray(y, dtype=np.float64)


class _Preparer:
    def __init__(self, spec: JobSpec, input_kind: InputKind, block_size: int | None,
                 tokenizer: Tokenizer | None, features: Standardization | None) -> None:
        self.spec, self.task, self.input_kind = spec, spec.task, input_kind
        self.block_size, self.tokenizer, self.features = block_size, tokenizer, features
        self.info = DataInfo(task=spec.task, input_kind=input_kind)

    # targets ----------------------------------------------------------------------------------------
    def fit_targets(self, y_all: list[Any], y_train: list[Any], where: str) -> None:
        """Class names come from every row of the training source (a rare class may land only in the
        validation split); regression standardization is fitted on the train split only."""
        if self.task == "classification":
            labels = sorted(set(y_all), key=_label_key)
            if len(labels) < 2:
                raise ConfigError(
                    f"{where}: label column {self.spec.data.label_field!r} has a single class ({labels[0]!r}); "
                    "classification needs at least two", field="data.label_field")
            self.info.labels = labels
        elif self.task == "regression":
            self.info.target = Standardization.fit(_regression_targets(y_train, where)[:, None])

    def targets(self, y: list[Any], where: str) -> torch.Tensor:
        if self.task == "classification":
            return _encode_labels(y, self.info.labels or [], where)
        values = self.info.target.apply(_regression_targets(y, where)[:, None])[:, 0]  # type: ignore[union-attr]
        return torch.tensor(values, dtype=torch.float32)

    # inputs -----------------------------------------------------------------------------------------
    def fit_table(self, table: Table, where: str) -> None:
        n_features = table.x.shape[1]
        self.info.num_features, self.info.feature_names = n_features, table.feature_names
        if self.input_kind == "image":
            shape = table.image_shape
            side = int(round(n_features**0.5))
            if shape is None and side * side == n_features:
                shape = (1, side, side)
            if shape is None:
                raise ConfigError(f"{where}: the cnn needs square single-channel images; {n_features} features "
                                  "is not a square number (use the mlp for tabular data)", field="model.builtin")
            self.info.image_shape = shape
        per_feature = self.input_kind == "vector"
        if self.features is not None and len(self.features.mean) == (n_features if per_feature else 1):
            self.info.features = self.features  # transfer learning: keep the base model's input scale
        else:
            self.info.features = Standardization.fit(table.x, per_feature)

    def table_tensors(self, table: Table, where: str) -> Tensors:
        if table.x.shape[1] != self.info.num_features:
            raise ConfigError(f"{where}: {table.x.shape[1]} features, but training data has "
                              f"{self.info.num_features}", field=where)
        x = torch.tensor(self.info.features.apply(table.x), dtype=torch.float32)  # type: ignore[union-attr]
        if self.info.image_shape:
            x = x.view(-1, *self.info.image_shape)
        return {"inputs": x, "labels": self.targets(table.y, where)}

    def fit_text(self, texts: list[str]) -> None:
        if self.tokenizer is None:
            self.tokenizer = CharTokenizer.fit(texts)
        self.info.tokenizer = self.tokenizer
        self.info.seq_len = self._seq_len()

    def _seq_len(self) -> int:
        max_length = self.spec.data.max_length
        if self.block_size is None:
            return max_length
        if "max_length" in self.spec.data.model_fields_set and max_length > self.block_size:
            raise ConfigError(f"data.max_length ({max_length}) exceeds the model's block_size "
                              f"({self.block_size}); lower it or raise model.config.block_size",
                              field="data.max_length")
        return min(max_length, self.block_size)

    def text_tensors(self, rows: TextRows, where: str) -> Tensors:
        T, pad = self.info.seq_len, self.tokenizer.pad_id  # type: ignore[union-attr]
        ids = torch.full((len(rows.texts), T), pad, dtype=torch.long)
        mask = torch.zeros((len(rows.texts), T), dtype=torch.long)
        for i, text in enumerate(rows.texts):
            tokens = encode_truncated(self.tokenizer, text, T)  # type: ignore[arg-type]
            if tokens:
                ids[i, : len(tokens)] = torch.tensor(tokens)
                mask[i, : len(tokens)] = 1
            else:
                mask[i, 0] = 1  # an empty text still has one (padding) position to pool
        return {"input_ids": ids, "attention_mask": mask, "labels": self.targets(rows.y, where)}

    def corpus_tensors(self, corpus: Corpus, where: str, min_chunks: int = 1) -> Tensors:
        """Non-overlapping windows of seq_len + 1 tokens: inputs are the first T, labels the last T."""
        T = self.info.seq_len
        ids = torch.tensor(self.tokenizer.encode(corpus.text), dtype=torch.long)  # type: ignore[union-attr]
        n = (len(ids) - 1) // T
        if n < min_chunks:
            raise ConfigError(f"{where}: {len(ids)} tokens make {n} sequences of {T}; need at least {min_chunks} "
                              "(more text, or a smaller data.max_length)", field=where)
        x = ids[: n * T].view(n, T)
        y = ids[1 : n * T + 1].view(n, T)
        return {"input_ids": x, "labels": y}


def prepare_data(
    spec: JobSpec,
    datasets: dict[str, tuple[Path, str]],
    input_kind: InputKind,
    *,
    block_size: int | None = None,
    tokenizer: Tokenizer | None = None,
    features: Standardization | None = None,
) -> PreparedData:
    """Load, split (seeded), fit preprocessing on the train split only, and return tensors on the CPU.

    `tokenizer` / `features`: reuse a base model's (transfer learning) instead of fitting new ones.
    """
    d, seed = spec.data, spec.hyperparameters.seed
    args = (spec.task, input_kind, datasets, d.text_field, d.label_field)
    train_src = load_source(d.train, "data.train", *args)
    val_src = load_source(d.validation, "data.validation", *args) if d.validation else None
    p = _Preparer(spec, input_kind, block_size, tokenizer, features)
    content = train_src.content
    split = 0.0 if val_src else d.validation_split
    from .text_data import Examples, prepare_examples

    if isinstance(content, Examples):  # causal LM with prompts that are not learned
        return prepare_examples(p, train_src, val_src, split, seed)

    if isinstance(content, Corpus):
        texts = [content.text] + ([val_src.content.text] if val_src else [])  # type: ignore[union-attr]
        p.fit_text(texts)
        every = p.corpus_tensors(content, "data.train", min_chunks=2 if split else 1)
        train_idx, val_idx = split_indices(num_rows(every), split, seed)
        train = {k: v[train_idx] for k, v in every.items()}
        val = p.corpus_tensors(val_src.content, "data.validation") if val_src else (  # type: ignore[arg-type]
            {k: v[val_idx] for k, v in every.items()} if len(val_idx) else None)
        return PreparedData(p.info, train, val)

    train_idx, val_idx = split_indices(len(content.y), split, seed)
    ti, vi = train_idx.tolist(), val_idx.tolist()
    p.fit_targets(content.y, [content.y[i] for i in ti], "data.train")
    if isinstance(content, Table):
        train_part = Table(content.x[ti], [content.y[i] for i in ti], content.feature_names, content.image_shape)
        val_part = Table(content.x[vi], [content.y[i] for i in vi], content.feature_names, content.image_shape)
        p.fit_table(train_part, "data.train")
        make = p.table_tensors
    else:
        train_part = TextRows([content.texts[i] for i in ti], [content.y[i] for i in ti])
        val_part = TextRows([content.texts[i] for i in vi], [content.y[i] for i in vi])
        p.fit_text(content.texts)
        make = p.text_tensors  # type: ignore[assignment]
    train = make(train_part, "data.train")  # type: ignore[arg-type]
    if val_src:
        val: Tensors | None = make(val_src.content, "data.validation")  # type: ignore[arg-type]
    else:
        val = make(val_part, "data.validation") if vi else None  # type: ignore[arg-type]
    return PreparedData(p.info, train, val)
