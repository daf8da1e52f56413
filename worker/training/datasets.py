"""Where examples come from: the builtin datasets and uploaded files, as raw tables, text rows or a corpus.

Nothing here splits, standardizes or makes tensors (data.py does that); this module only reads and checks.
Builtins (spec.BUILTIN_DATASETS): digits, wine, breast_cancer (classification), diabetes (regression) from
scikit-learn's bundled copies (no download), and tiny_text, a plain-English corpus shipped in corpus/.
Uploaded files are parsed by dataset_files.read_records into rows of parsed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .reporting import ConfigError
from .spec import BUILTIN_DATASETS

InputKind = str  # "vector" | "image" | "tokens"


@dataclass
class Table:
    """Numeric features. `y` holds raw label values (classification) or floats (regression)."""

    x: np.ndarray  # (N, F) float64
    y: list[Any]
    feature_names: list[str]
    image_shape: tuple[int, int, int] | None = None  # the natural image shape, when the rows are images


@dataclass
class TextRows:
    texts: list[str]
    y: list[Any]


@dataclass
class Corpus:
    text: str


@dataclass
class Source:
    """One dataset reference resolved: what it is called (for error messages) and its content."""

    ref: str
    field: str  # "data.train" | "data.validation"
    content: Table | TextRows | Corpus | Any  # Any: text_data.Examples
    notes: list[str] = field(default_factory=list)


# --- builtins -------------------------------------------------------------------------------------


def _sklearn_table(loader: Callable[..., Any], classification: bool, image_shape=None) -> Table:
    bunch = loader()
    if classification:
        names = [str(n) for n in bunch.target_names]
        y: list[Any] = [names[int(t)] for t in bunch.target]
    else:
        y = [float(t) for t in bunch.target]
    feature_names = [str(n) for n in getattr(bunch, "feature_names", [])] or [
        f"x{i}" for i in range(bunch.data.shape[1])
    ]
    return Table(np.asarray(bunch.data, dtype=np.float64), y, feature_names, image_shape)


def load_corpus_text() -> str:
    return resources.files(__package__).joinpath("corpus/tiny_text.txt").read_text(encoding="utf-8")


def load_builtin(name: str) -> Table | Corpus:
    from sklearn import datasets as sk

    if name == "digits":
        return _sklearn_table(sk.load_digits, True, image_shape=(1, 8, 8))
    if name == "wine":
        return _sklearn_table(sk.load_wine, True)
    if name == "breast_cancer":
        return _sklearn_table(sk.load_breast_cancer, True)
    if name == "diabetes":
        # scaled=False: the real units (disease progression one year after baseline), so MAE means something
        return _sklearn_table(lambda: sk.load_diabetes(scaled=False), False)
    if name == "tiny_text":
        return Corpus(load_corpus_text())
    raise ConfigError(f"unknown builtin dataset {name!r}; known: {', '.join(sorted(BUILTIN_DATASETS))}")


# --- uploaded files -------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def table_from_records(rows: list[dict[str, Any]], label_field: str, where: str) -> Table:
    """Numeric columns (numbers or lists of numbers, flattened) other than the label become features."""
    if not rows:
        raise ConfigError(f"{where}: the dataset has no rows", field=where)
    columns = [c for c in rows[0] if c != label_field]
    if not columns:
        raise ConfigError(f"{where}: no feature columns besides {label_field!r}", field=where)
    feature_names: list[str] = []
    for c in columns:
        v = rows[0][c]
        feature_names += [f"{c}[{i}]" for i in range(len(v))] if isinstance(v, list) else [c]
    x = np.empty((len(rows), len(feature_names)), dtype=np.float64)
    y: list[Any] = []
    for i, row in enumerate(rows):
        values: list[Any] = []
        for c in columns:
            v = row.get(c)
            values.extend(v if isinstance(v, list) else [v])
        if len(values) != len(feature_names) or not all(_is_number(v) for v in values):
            raise ConfigError(
                f"{where}: row {i + 1}: features must be finite numbers (or lists of them) in columns "
                f"{', '.join(columns)}, with the same lengths in every row",
                field=where,
            )
        x[i] = values
        y.append(_label_of(row, label_field, i, where))
    return Table(x, y, feature_names)


def text_rows_from_records(rows: list[dict[str, Any]], text_field: str, label_field: str, where: str) -> TextRows:
    if not rows:
        raise ConfigError(f"{where}: the dataset has no rows", field=where)
    texts = []
    for i, row in enumerate(rows):
        text = row.get(text_field)
        if not isinstance(text, str):
            raise ConfigError(f"{where}: row {i + 1} has no text in {text_field!r}", field="data.text_field")
        texts.append(text)
    return TextRows(texts, [_label_of(row, label_field, i, where) for i, row in enumerate(rows)])


def _document(row: dict[str, Any], text_field: str) -> str | None:
    """One row as plain text: the text column, prompt + completion, or a chat as "role: content" lines.
    (The character model learns the whole document; prompts are not masked out of the loss.)"""
    if isinstance(row.get(text_field), str):
        return row[text_field]
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
        return row["prompt"] + row["completion"]
    messages = row.get("messages")
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in messages)
    return None


def corpus_from_records(rows: list[dict[str, Any]], text_field: str, where: str) -> Corpus:
    texts = [_document(row, text_field) for row in rows]
    if not rows or not all(isinstance(t, str) for t in texts):
        raise ConfigError(f"{where}: every row needs a text in {text_field!r} (or prompt and completion, "
                          "or chat messages)", field="data.text_field")
    return Corpus("\n\n".join(texts))  # type: ignore[arg-type]  # documents separated by a blank line


def _label_of(row: dict[str, Any], label_field: str, index: int, where: str) -> Any:
    if label_field not in row or row[label_field] is None:
        raise ConfigError(f"{where}: row {index + 1} has no label in {label_field!r}", field="data.label_field")
    label = row[label_field]
    if isinstance(label, (list, dict)):
        raise ConfigError(f"{where}: row {index + 1}: a label must be a single value", field="data.label_field")
    return label


def load_source(
    ref: str,
    field: str,
    task: str,
    input_kind: InputKind,
    datasets: dict[str, tuple[Path, str]],
    text_field: str,
    label_field: str,
) -> Source:
    """Read one dataset reference into the raw form the task and model input need."""
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        content: Table | TextRows | Corpus = load_builtin(name)
        if task not in BUILTIN_DATASETS[name]:
            raise ConfigError(f"{field}: {ref} does not serve task {task!r}", field=field)
        if input_kind == "tokens" and not isinstance(content, Corpus):
            raise ConfigError(
                f"{field}: {ref} is a table of numbers; the transformer needs text (use mlp or cnn)", field=field
            )
        return Source(ref, field, content)
    if ref not in datasets:
        raise ConfigError(f"{field}: dataset {ref} was not provided to the worker", field=field)
    from .dataset_files import read_records  # owned by the uploads code; parses JSONL/CSV into rows

    path, fmt = datasets[ref]
    try:
        rows = read_records(Path(path), fmt)
    except (OSError, ValueError) as e:  # DatasetFileError is a ValueError naming the line
        raise ConfigError(f"{field}: dataset {ref} cannot be read: {e}", field=field) from e
    if task == "causal_lm":  # a corpus (text column), or prompt/completion and chat examples (text_data.py)
        from .text_data import causal_lm_content

        return Source(ref, field, causal_lm_content(rows, text_field, field))
    if input_kind == "tokens":
        return Source(ref, field, text_rows_from_records(rows, text_field, label_field, field))
    return Source(ref, field, table_from_records(rows, label_field, field))
