"""Uploaded dataset files (JSON Lines or CSV): validate while streaming, summarise, and read into rows.

Torch-free and framework-free: the API validates uploads with `inspect_file`, the jobs API checks a spec's
field mapping with `check_fields`, and the training core loads rows with `read_records`.

What a file may hold (its `kind`, recognised from the column names):
- `text_label`         {"text", "label"}: classification; labels are strings or integers
- `text_target`        {"text", "target"} (or "label" holding non-integer numbers): regression
- `tabular`            numeric columns (numbers, or lists of numbers in JSONL), optionally a label/target column
- `prompt_completion`  {"prompt", "completion"}: causal LM
- `chat`               {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}: causal LM
- `text`               {"text"} alone: a causal-LM corpus, one document a row
- `custom`             anything else; the job's data.text_field / data.label_field must then name columns
Extra columns are allowed. Every row must have the same columns with the same types as the first row
(JSONL) or the header (CSV); a deviation is an error naming the line, so a typo never silently drops data.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FORMATS = ("jsonl", "csv")
MAX_LINE_BYTES = 8 << 20  # one row; longer lines are refused rather than buffered
MAX_LABELS = 10_000  # distinct classification labels; beyond that it is not a classification column
SAMPLE_ROWS = 5
SAMPLE_STRING_CHARS = 200
SAMPLE_LIST_ITEMS = 10
CHAT_ROLES = ("system", "user", "assistant")
TEXT_COLUMNS = ("text", "prompt", "completion")  # kept as strings in CSV even when they look numeric
_BOM = b"\xef\xbb\xbf"
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")  # no nan/inf: those are not data


class DatasetFileError(ValueError):
    """A file that cannot be used as a dataset; `line` is 1-based (None when it concerns the whole file)."""

    def __init__(self, line: int | None, message: str, *, field: str | None = None) -> None:
        self.line = line
        self.message = message
        self.field = field  # check_fields: the job-spec field at fault ("data.label_field", ...)
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclass
class DatasetSummary:
    format: str
    rows: int
    columns: list[str]
    kind: str
    label_counts: dict[str, int] | None  # counts of the "label" column's values, when it holds classes
    samples: list[dict[str, Any]]  # the first rows, long strings and lists truncated
    # column -> "string" | "integer" | "number" | "boolean" | "null" | "vector" (list of numbers) |
    #           "array" | "object"; CSV columns are string, integer or number
    column_types: dict[str, str] = field(default_factory=dict)


# --- reading lines safely -------------------------------------------------------------------------


def _open_binary(source: IO[bytes] | Path | str) -> tuple[IO[bytes], bool]:
    if isinstance(source, (str, Path)):
        return open(source, "rb"), True
    return source, False


def _text_lines(stream: IO[bytes]) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its terminator); refuses long lines, NUL bytes and non-UTF-8."""
    number = 0
    offset = 0  # byte offset of the line's start in the file
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise DatasetFileError(number, f"line longer than {MAX_LINE_BYTES} bytes")
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
            offset += len(_BOM)
        nul = raw.find(b"\x00")
        if nul >= 0:
            raise DatasetFileError(
                number, f"NUL byte at byte offset {offset + nul} (a binary file, or UTF-16? save it as UTF-8)"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start : exc.start + 1].hex()
            raise DatasetFileError(
                number, f"not UTF-8 text (byte 0x{bad} at byte offset {offset + exc.start}); save the file as UTF-8"
            ) from None
        offset += len(raw)
        yield number, text


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "vector" if value and all(_is_number(v) for v in value) else "array"
    return "object"


def _describe(value: Any) -> str:
    """A value's JSON type, for messages ("an array", "null", ...)."""
    kind = _type_of(value)
    return {"vector": "an array", "array": "an array", "object": "an object", "null": "null",
            "boolean": "a boolean", "integer": "an integer", "number": "a number", "string": "a string"}[kind]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same_family(a: str, b: str) -> bool:
    numeric = ("integer", "number")
    return a == b or (a in numeric and b in numeric)


def _merge_type(a: str, b: str) -> str:
    return "number" if {a, b} == {"integer", "number"} else a


def _truncate(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= SAMPLE_STRING_CHARS else value[:SAMPLE_STRING_CHARS] + "…"
    if depth >= 4:
        return "…"
    if isinstance(value, list):
        items = [_truncate(v, depth + 1) for v in value[:SAMPLE_LIST_ITEMS]]
        return items + ["…"] if len(value) > SAMPLE_LIST_ITEMS else items
    if isinstance(value, dict):
        return {str(k)[:SAMPLE_STRING_CHARS]: _truncate(v, depth + 1) for k, v in list(value.items())[:50]}
    return value


def _kind_of(columns: list[str], types: dict[str, str]) -> str:
    names = set(columns)
    if "messages" in names and types.get("messages") == "array":
        return "chat"  # JSONL only: the checker has validated every conversation
    if {"prompt", "completion"} <= names:
        return "prompt_completion"
    if "text" in names and "label" in names:
        return "text_target" if types.get("label") == "number" else "text_label"
    if "text" in names and "target" in names:
        return "text_target"
    if "text" in names:
        return "text"
    target = "label" if "label" in names else "target" if "target" in names else None
    features = [c for c in columns if c != target]
    if features and all(types.get(c) in ("integer", "number", "vector") for c in features):
        return "tabular"
    return "custom"


class _Checker:
    """Row-by-row rules shared by both formats, once the columns (and for JSONL their types) are known."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.names = set(columns)
        self.label_counts: dict[str, int] | None = {} if "label" in self.names else None
        self.vector_lengths: dict[str, tuple[int, int]] = {}  # column -> (length, first line)

    def required_strings(self) -> tuple[str, ...]:
        if "messages" in self.names:
            return ()
        if {"prompt", "completion"} <= self.names:
            return ("prompt", "completion")
        return ("text",) if "text" in self.names else ()

    def check(self, line: int, row: dict[str, Any]) -> None:
        for name in self.required_strings():
            value = row[name]
            if not isinstance(value, str):
                raise DatasetFileError(line, f"field {name!r} must be a string, got {_describe(value)}")
            if not value:
                raise DatasetFileError(line, f"field {name!r} is empty")
        if "messages" in self.names:
            _check_messages(line, row["messages"])
        if "target" in self.names and ("text" in self.names or "label" not in self.names):
            value = row["target"]
            if not _is_number(value) or not math.isfinite(value):
                raise DatasetFileError(line, f"field 'target' must be a number, got {_describe(value)}")
        if "label" in self.names:
            self._count_label(line, row["label"])
        for name in self.columns:
            value = row[name]
            if isinstance(value, list) and value and all(_is_number(v) for v in value):
                length, first = self.vector_lengths.setdefault(name, (len(value), line))
                if len(value) != length:
                    raise DatasetFileError(
                        line, f"field {name!r} has {len(value)} numbers; line {first} has {length}"
                    )

    def _count_label(self, line: int, label: Any) -> None:
        if isinstance(label, bool) or label is None or isinstance(label, (list, dict)):
            raise DatasetFileError(
                line, f"field 'label' must be a string or an integer (a number for regression), got {_describe(label)}"
            )
        if isinstance(label, str) and not label:
            raise DatasetFileError(line, "field 'label' is empty")
        if isinstance(label, float):
            if not math.isfinite(label):
                raise DatasetFileError(line, "field 'label' is not a finite number")
            self.label_counts = None  # a regression target, not classes
            return
        if self.label_counts is None:
            return
        key = str(label)
        if key not in self.label_counts and len(self.label_counts) >= MAX_LABELS:
            raise DatasetFileError(
                line,
                f"more than {MAX_LABELS} distinct values in 'label': too many classes "
                "(for a numeric regression target, name the field 'target')",
            )
        self.label_counts[key] = self.label_counts.get(key, 0) + 1


def _check_messages(line: int, messages: Any) -> None:
    if not isinstance(messages, list):
        raise DatasetFileError(line, f"field 'messages' must be a list of messages, got {_describe(messages)}")
    if not messages:
        raise DatasetFileError(line, "field 'messages' is empty")
    assistant = False
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise DatasetFileError(line, f"{where} must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise DatasetFileError(
                line, f"{where}.role must be one of {', '.join(CHAT_ROLES)}, got {role!r:.40}"
            )
        if not isinstance(message.get("content"), str):
            raise DatasetFileError(line, f"{where}.content must be a string, got {_describe(message.get('content'))}")
        assistant = assistant or role == "assistant"
    if not assistant:
        raise DatasetFileError(line, "field 'messages' has no assistant turn to learn from")


# --- JSON Lines -----------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json_line(number: int, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise DatasetFileError(number, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise DatasetFileError(number, f"invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DatasetFileError(number, f"expected a JSON object, got {_describe(value)}")
    if not value:
        raise DatasetFileError(number, "empty JSON object")
    return value


def _iter_jsonl(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in _text_lines(stream):
        if text.strip():
            yield number, _parse_json_line(number, text)


def _inspect_jsonl(stream: IO[bytes], max_rows: int | None) -> DatasetSummary:
    columns: list[str] = []
    types: dict[str, str] = {}
    first_line = 0
    checker: _Checker | None = None
    samples: list[dict[str, Any]] = []
    rows = 0
    for number, row in _iter_jsonl(stream):
        if checker is None:
            columns, first_line = list(row), number
            types = {name: _type_of(value) for name, value in row.items()}
            checker = _Checker(columns)
            checker.check(number, row)
        elif row.keys() != types.keys():
            missing = [c for c in columns if c not in row]
            extra = [c for c in row if c not in types]
            parts = [f"missing {', '.join(map(repr, missing))}" if missing else "",
                     f"unexpected {', '.join(map(repr, extra))}" if extra else ""]
            raise DatasetFileError(
                number, f"fields differ from line {first_line} ({'; '.join(p for p in parts if p)})"
            )
        else:
            checker.check(number, row)  # first: a known field's own message is the clearer one
            for name, value in row.items():
                seen, now = types[name], _type_of(value)
                if seen == "array" and now == "vector":
                    continue  # an array column may hold any list, numbers included
                if not _same_family(seen, now):
                    raise DatasetFileError(
                        number, f"field {name!r} is {now} here but {seen} on line {first_line}"
                    )
                types[name] = _merge_type(seen, now)
        rows += 1
        if len(samples) < SAMPLE_ROWS:
            samples.append(_truncate(row))
        if max_rows is not None and rows >= max_rows:
            break
    if checker is None:
        raise DatasetFileError(None, "the file has no rows")
    return DatasetSummary("jsonl", rows, columns, _kind_of(columns, types), checker.label_counts, samples, types)


# --- CSV ------------------------------------------------------------------------------------------


def _number(cell: str) -> int | float | None:
    cell = cell.strip()
    if _INT.match(cell):
        return int(cell)
    if _FLOAT.match(cell):
        return float(cell)
    return None


def _csv_rows(stream: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    """(line number of the record's last line, cells); blank lines are skipped."""
    lines = _text_lines(stream)
    counter = {"line": 0}

    def texts() -> Iterator[str]:
        for number, text in lines:
            counter["line"] = number
            yield text

    reader = csv.reader(texts(), strict=True)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetFileError(counter["line"] or None, f"malformed CSV ({exc})") from None
        if cells and any(c.strip() for c in cells):
            yield counter["line"], cells


def _read_header(rows: Iterator[tuple[int, list[str]]]) -> tuple[int, list[str]]:
    try:
        line, header = next(rows)
    except StopIteration:
        raise DatasetFileError(None, "the file has no rows") from None
    header = [h.strip() for h in header]
    for i, name in enumerate(header):
        if not name:
            raise DatasetFileError(line, f"header column {i + 1} has no name (a CSV file needs a header row)")
        if header.index(name) != i:
            raise DatasetFileError(line, f"header names column {name!r} twice")
    return line, header


def _inspect_csv(stream: IO[bytes], max_rows: int | None) -> DatasetSummary:
    rows_iter = _csv_rows(stream)
    _, header = _read_header(rows_iter)
    width = len(header)
    text_like = [c for c in header if c in TEXT_COLUMNS]
    required = set(text_like) | ({"label", "target"} & set(header))
    numeric = {c: c not in text_like for c in header}  # still possibly numeric
    integral = dict.fromkeys(header, True)
    first_empty: dict[str, int] = {}
    raw_labels: dict[str, int] = {}
    label_index = header.index("label") if "label" in header else None
    raw_sample: list[tuple[int, list[str]]] = []
    target_rows: list[tuple[int, str]] = []  # checked once we know the column
    rows = 0
    for line, cells in rows_iter:
        if len(cells) != width:
            raise DatasetFileError(
                line, f"expected {width} fields ({', '.join(header)[:200]}), got {len(cells)}"
            )
        for name, cell in zip(header, cells):
            if not cell.strip():
                if name in required:
                    raise DatasetFileError(line, f"empty value in column {name!r}")
                first_empty.setdefault(name, line)
                continue
            if numeric[name]:
                value = _number(cell)
                if value is None:
                    numeric[name] = False
                    if name == "target":
                        target_rows.append((line, cell))
                elif isinstance(value, float):
                    integral[name] = False
        if label_index is not None:
            key = cells[label_index].strip()
            if key not in raw_labels and len(raw_labels) >= MAX_LABELS:
                raise DatasetFileError(
                    line,
                    f"more than {MAX_LABELS} distinct values in 'label': too many classes "
                    "(for a numeric regression target, name the column 'target')",
                )
            raw_labels[key] = raw_labels.get(key, 0) + 1
        rows += 1
        if len(raw_sample) < SAMPLE_ROWS:
            raw_sample.append((line, cells))
        if max_rows is not None and rows >= max_rows:
            break
    if rows == 0:
        raise DatasetFileError(None, "the file has no rows (only a header)")
    types = {c: ("integer" if integral[c] else "number") if numeric[c] else "string" for c in header}
    if "target" in header and types["target"] == "string" and ("text" in header or "label" not in header):
        line, cell = target_rows[0]
        raise DatasetFileError(line, f"column 'target' must be a number, got {cell[:40]!r}")
    for name, line in sorted(first_empty.items(), key=lambda item: item[1]):
        if numeric[name]:
            raise DatasetFileError(line, f"empty value in numeric column {name!r}")
    label_counts: dict[str, int] | None = None
    if "label" in header and types["label"] != "number":
        label_counts = {}
        for key, count in raw_labels.items():
            key = str(int(key)) if types["label"] == "integer" else key
            label_counts[key] = label_counts.get(key, 0) + count
    samples = [_truncate(_convert(header, cells, types)) for _, cells in raw_sample]
    kind = _kind_of(header, types)
    return DatasetSummary("csv", rows, header, kind, label_counts, samples, types)


def _convert(header: list[str], cells: list[str], types: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, cell in zip(header, cells):
        kind = types[name]
        if kind == "string":
            row[name] = cell
        elif not cell.strip():
            row[name] = None
        else:
            row[name] = int(cell) if kind == "integer" else float(cell)
    return row


# --- public API -----------------------------------------------------------------------------------


def inspect_file(source: IO[bytes] | Path | str, fmt: str, *, max_rows: int | None = None) -> DatasetSummary:
    """Validate a dataset file while streaming it once, and summarise it. Raises DatasetFileError."""
    if fmt not in FORMATS:
        raise DatasetFileError(None, f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    stream, owned = _open_binary(source)
    try:
        return _inspect_jsonl(stream, max_rows) if fmt == "jsonl" else _inspect_csv(stream, max_rows)
    finally:
        if owned:
            stream.close()


def read_records(path: Path, fmt: str) -> list[dict[str, Any]]:
    """Every row of a stored dataset file, parsed: JSON values as they are; CSV numeric columns as numbers.

    A CSV column is numeric when every non-empty cell is a number (text, prompt and completion stay strings);
    an empty cell of a numeric column is None. The file is validated as `inspect_file` does.
    """
    if fmt == "jsonl":
        inspect_file(path, fmt)  # the same rules as at upload, so the core never sees a shape upload refused
        with open(path, "rb") as stream:
            return [row for _, row in _iter_jsonl(stream)]
    summary = inspect_file(path, fmt)
    with open(path, "rb") as stream:
        rows_iter = _csv_rows(stream)
        _, header = _read_header(rows_iter)
        return [_convert(header, cells, summary.column_types) for _, cells in rows_iter]


# --- fitting a dataset to a job -------------------------------------------------------------------

_NUMERIC = ("integer", "number")


def _columns_text(summary: DatasetSummary) -> str:
    return ", ".join(summary.columns)[:300]


def check_fields(summary: DatasetSummary, task: str, text_field: str, label_field: str) -> None:
    """Whether a dataset can serve a task with the job's data.text_field / data.label_field.

    Raises DatasetFileError (line None) whose message names the spec field and the reason; its `field` is
    that spec field ("data.text_field", "data.label_field", "data" or "task").
    """
    try:
        _check_fields(summary, task, text_field, label_field)
    except DatasetFileError as exc:
        exc.field = exc.message.split(":", 1)[0]
        raise


def _check_fields(summary: DatasetSummary, task: str, text_field: str, label_field: str) -> None:
    types = summary.column_types
    columns = set(summary.columns)
    if task == "causal_lm":
        if summary.kind in ("chat", "prompt_completion"):
            return
        if text_field not in columns:
            raise DatasetFileError(
                None,
                f"data.text_field: no column {text_field!r} in the dataset (columns: {_columns_text(summary)}); "
                "causal_lm needs a text column, 'prompt' and 'completion', or chat 'messages'",
            )
        if types.get(text_field) != "string":
            raise DatasetFileError(
                None, f"data.text_field: column {text_field!r} holds {types.get(text_field)} values, not text"
            )
        return
    if task not in ("classification", "regression"):
        raise DatasetFileError(None, f"task: unknown task {task!r}")
    if summary.kind in ("chat", "prompt_completion"):
        raise DatasetFileError(None, f"data: a {summary.kind} dataset serves causal_lm, not {task}")
    if label_field not in columns:
        hint = ""
        for other in ("target", "label"):
            if other != label_field and other in columns:
                hint = f"; set data.label_field to {other!r}"
        raise DatasetFileError(
            None,
            f"data.label_field: no column {label_field!r} in the dataset (columns: {_columns_text(summary)}){hint}",
        )
    label_type = types.get(label_field)
    if task == "classification":
        if label_type not in ("string", "integer"):
            raise DatasetFileError(
                None,
                f"data.label_field: column {label_field!r} holds {label_type} values; classification needs "
                "string or integer labels (use task regression for numeric targets)",
            )
        if label_field == "label" and summary.label_counts is not None and len(summary.label_counts) < 2:
            found = ", ".join(repr(k) for k in summary.label_counts)
            raise DatasetFileError(
                None, f"data.label_field: classification needs at least 2 classes in 'label', found only {found}"
            )
    elif label_type not in _NUMERIC:
        raise DatasetFileError(
            None, f"data.label_field: column {label_field!r} holds {label_type} values; regression needs numbers"
        )
    if text_field in columns:
        if types.get(text_field) != "string":
            raise DatasetFileError(
                None, f"data.text_field: column {text_field!r} holds {types.get(text_field)} values, not text"
            )
        return
    features = [c for c in summary.columns if c != label_field]
    not_numeric = [c for c in features if types.get(c) not in (*_NUMERIC, "vector")]
    if not features or not_numeric:
        raise DatasetFileError(
            None,
            f"data.text_field: no column {text_field!r} in the dataset, and it is not a numeric table "
            f"(non-numeric columns: {', '.join(not_numeric)[:200] or 'none besides the label'})",
        )
