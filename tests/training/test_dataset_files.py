"""The dataset-file parser: what uploads are accepted, how they are summarised, and the errors that name the line."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from worker.training import dataset_files
from worker.training.dataset_files import DatasetFileError, check_fields, inspect_file, read_records


def jsonl(*rows: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def inspect(data: bytes, fmt: str = "jsonl", **kwargs):  # noqa: ANN003, ANN201
    return inspect_file(io.BytesIO(data), fmt, **kwargs)


def error(data: bytes, fmt: str = "jsonl") -> DatasetFileError:
    with pytest.raises(DatasetFileError) as info:
        inspect(data, fmt)
    return info.value


# --- recognised shapes ----------------------------------------------------------------------------


def test_text_label_jsonl_counts_labels() -> None:
    s = inspect(jsonl({"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}, {"text": "ok", "label": "pos"}))
    assert (s.format, s.rows, s.columns, s.kind) == ("jsonl", 3, ["text", "label"], "text_label")
    assert s.label_counts == {"pos": 2, "neg": 1}
    assert s.column_types == {"text": "string", "label": "string"}
    assert s.samples[0] == {"text": "good", "label": "pos"}


def test_integer_labels_and_extra_columns() -> None:
    s = inspect(jsonl({"text": "a", "label": 0, "id": 7}, {"text": "b", "label": 1, "id": 8}))
    assert s.kind == "text_label" and s.label_counts == {"0": 1, "1": 1} and s.columns == ["text", "label", "id"]


def test_text_target_is_regression() -> None:
    s = inspect(jsonl({"text": "a", "target": 1.5}, {"text": "b", "target": 2}))
    assert s.kind == "text_target" and s.label_counts is None and s.column_types["target"] == "number"


def test_float_labels_make_a_regression_shape_that_classification_refuses() -> None:
    s = inspect(jsonl({"text": "a", "label": 1}, {"text": "b", "label": 2.5}))
    assert s.kind == "text_target" and s.label_counts is None
    check_fields(s, "regression", "text", "label")
    with pytest.raises(DatasetFileError, match="string or integer labels") as info:
        check_fields(s, "classification", "text", "label")
    assert info.value.field == "data.label_field"


def test_tabular_csv_with_string_labels() -> None:
    s = inspect(b"x1,x2,label\n1,2.5,cat\n3,-4e2,dog\n", "csv")
    assert s.kind == "tabular" and s.rows == 2
    assert s.column_types == {"x1": "integer", "x2": "number", "label": "string"}
    assert s.label_counts == {"cat": 1, "dog": 1}
    assert s.samples[1] == {"x1": 3, "x2": -400.0, "label": "dog"}


def test_tabular_jsonl_with_vector_features_and_target() -> None:
    s = inspect(jsonl({"features": [1, 2.0], "target": 3.5}, {"features": [0, 1], "target": -1}))
    assert s.kind == "tabular" and s.column_types["features"] == "vector"
    check_fields(s, "regression", "text", "target")


def test_prompt_completion_and_chat_and_plain_text() -> None:
    assert inspect(jsonl({"prompt": "2+2=", "completion": "4"})).kind == "prompt_completion"
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}]}
    s = inspect(jsonl(chat, chat))
    assert s.kind == "chat" and s.rows == 2
    assert inspect(jsonl({"text": "once upon a time"})).kind == "text"
    assert inspect(b"text\nhello\n", "csv").kind == "text"


def test_unknown_columns_are_custom_and_checked_by_the_job_mapping() -> None:
    s = inspect(jsonl({"review": "great", "stars": 5}, {"review": "poor", "stars": 1}))
    assert s.kind == "custom"
    check_fields(s, "classification", "review", "stars")
    with pytest.raises(DatasetFileError, match=r"data.label_field: no column 'label'.*review, stars"):
        check_fields(s, "classification", "review", "label")


def test_bom_crlf_and_blank_lines_are_tolerated() -> None:
    s = inspect(b"\xef\xbb\xbftext,label\r\nhi,a\r\n\r\nyo,b\r\n", "csv")
    assert s.columns == ["text", "label"] and s.rows == 2
    s = inspect(b'\xef\xbb\xbf{"text": "a", "label": 1}\n\n  \n{"text": "b", "label": 2}\n')
    assert s.rows == 2


def test_samples_are_the_first_five_rows_truncated() -> None:
    rows = [{"text": "x" * 1000, "label": i % 2} for i in range(8)]
    s = inspect(jsonl(*rows))
    assert len(s.samples) == 5 and len(s.samples[0]["text"]) == dataset_files.SAMPLE_STRING_CHARS + 1


def test_max_rows_stops_early() -> None:
    assert inspect(jsonl(*[{"text": "a", "label": 1}] * 10) + b"not json\n", max_rows=3).rows == 3


def test_csv_numeric_looking_text_stays_text() -> None:
    s = inspect(b"text,label\n123,1\n456,0\n", "csv")
    assert s.column_types["text"] == "string" and s.samples[0] == {"text": "123", "label": 1}


# --- refused files: the error names the line and the problem -------------------------------------

BAD = [
    ("malformed json", b'{"text": "a", "label": 1}\n{"text": "b" "label": 2}\n', "jsonl", 2, r"invalid JSON \(Expecting ',' delimiter at column 14\)"),
    ("non-object line", b'{"text": "a", "label": 1}\n[1, 2]\n', "jsonl", 2, "expected a JSON object, got an array"),
    ("nan", b'{"x": NaN, "label": 1}\n', "jsonl", 1, "NaN is not valid JSON"),
    ("missing field", jsonl({"text": "a", "label": 1}, {"text": "b"}), "jsonl", 2, "fields differ from line 1 .missing 'label'"),
    ("typo field", jsonl({"text": "a", "label": 1}, {"text": "b", "lable": 1}), "jsonl", 2, "missing 'label'; unexpected 'lable'"),
    ("text not a string", jsonl({"text": "a", "label": 1}, {"text": 5, "label": 1}), "jsonl", 2, "field 'text' must be a string, got an integer"),
    ("type change", jsonl({"text": "a", "label": 1}, {"text": "b", "label": "x"}), "jsonl", 2, "field 'label' is string here but integer on line 1"),
    ("bool label", jsonl({"text": "a", "label": True}), "jsonl", 1, "'label' must be a string or an integer"),
    ("null label", jsonl({"text": "a", "label": None}), "jsonl", 1, "'label' must be a string or an integer"),
    ("target text", jsonl({"text": "a", "target": "high"}), "jsonl", 1, "field 'target' must be a number, got a string"),
    ("messages not list", jsonl({"messages": "hi"}), "jsonl", 1, "field 'messages' must be a list of messages, got a string"),
    ("unknown role", jsonl({"messages": [{"role": "bot", "content": "x"}]}), "jsonl", 1, r"messages\[0\].role must be one of system, user, assistant, got 'bot'"),
    ("content not str", jsonl({"messages": [{"role": "assistant", "content": 3}]}), "jsonl", 1, r"messages\[0\].content must be a string"),
    ("no assistant", jsonl({"messages": [{"role": "user", "content": "x"}]}), "jsonl", 1, "no assistant turn"),
    ("ragged csv", b"text,label\na,1\nb,2,3\n", "csv", 3, r"expected 2 fields \(text, label\), got 3"),
    ("empty cell", b"text,label\na,1\n,2\n", "csv", 3, "empty value in column 'text'"),
    ("empty numeric", b"x,y,label\n1,2,a\n3,,b\n", "csv", 3, "empty value in numeric column 'y'"),
    ("unterminated quote", b'text,label\n"abc,1\n', "csv", 2, "malformed CSV"),
    ("duplicate header", b"a,a\n1,2\n", "csv", 1, "header names column 'a' twice"),
    ("csv target text", b"text,target\na,1\nb,high\n", "csv", 3, "column 'target' must be a number, got 'high'"),
    ("non-utf8", b'{"text": "a", "label": 1}\n{"text": "caf\xe9", "label": 1}\n', "jsonl", 2, r"not UTF-8 text \(byte 0xe9 at byte offset 39\)"),
    ("nul byte", b'text,label\na\x00,1\n', "csv", 2, "NUL byte at byte offset 12"),
    ("utf-16", "text,label\na,1\n".encode("utf-16"), "csv", 1, "NUL byte"),
]


@pytest.mark.parametrize(("data", "fmt", "line", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_files_name_the_line_and_problem(data: bytes, fmt: str, line: int, message: str) -> None:
    exc = error(data, fmt)
    assert exc.line == line
    assert str(exc).startswith(f"line {line}: ")
    assert re.search(message, str(exc)), str(exc)


@pytest.mark.parametrize(("data", "fmt"), [(b"", "jsonl"), (b"\n \n", "jsonl"), (b"", "csv"), (b"a,b\n", "csv")])
def test_empty_files_are_refused(data: bytes, fmt: str) -> None:
    exc = error(data, fmt)
    assert exc.line is None and "no rows" in str(exc)


def test_overlong_lines_are_refused_without_buffering_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_files, "MAX_LINE_BYTES", 100)
    exc = error(jsonl({"text": "a", "label": 1}, {"text": "x" * 200, "label": 1}))
    assert exc.line == 2 and "longer than 100 bytes" in str(exc)


def test_too_many_distinct_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_files, "MAX_LABELS", 3)
    exc = error(jsonl(*[{"text": "a", "label": f"c{i}"} for i in range(5)]))
    assert exc.line == 4 and "more than 3 distinct values" in str(exc)


# --- reading rows for training --------------------------------------------------------------------


def test_read_records_csv_converts_numeric_columns(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b'\xef\xbb\xbftext,label,score,note\n"hello, world",1,0.5,\n007,0,2,x\n')
    assert read_records(path, "csv") == [
        {"text": "hello, world", "label": 1, "score": 0.5, "note": ""},
        {"text": "007", "label": 0, "score": 2.0, "note": "x"},
    ]


def test_read_records_jsonl_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    path.write_bytes(jsonl(*rows) + b"\n")
    assert read_records(path, "jsonl") == rows
    path.write_bytes(jsonl(*rows) + b"{oops}\n")
    with pytest.raises(DatasetFileError, match="line 3: invalid JSON"):
        read_records(path, "jsonl")


def test_the_parser_imports_without_torch_or_web_frameworks() -> None:
    # The API validates uploads with it, so importing it must not drag torch into the API process.
    code = (
        "import sys, worker.training.dataset_files; "
        "print(sorted(m for m in ('torch', 'fastapi', 'sqlalchemy', 'celery') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- fitting a job --------------------------------------------------------------------------------


def test_check_fields_for_each_task() -> None:
    one_class = inspect(jsonl({"text": "a", "label": "x"}, {"text": "b", "label": "x"}))
    with pytest.raises(DatasetFileError, match="at least 2 classes in 'label', found only 'x'"):
        check_fields(one_class, "classification", "text", "label")
    check_fields(one_class, "causal_lm", "text", "label")

    chat = inspect(jsonl({"messages": [{"role": "assistant", "content": "x"}]}))
    check_fields(chat, "causal_lm", "text", "label")
    with pytest.raises(DatasetFileError, match="chat dataset serves causal_lm") as info:
        check_fields(chat, "classification", "text", "label")
    assert info.value.field == "data"

    targets = inspect(jsonl({"text": "a", "target": 1.0}, {"text": "b", "target": 2.0}))
    with pytest.raises(DatasetFileError, match="no column 'label'.*set data.label_field to 'target'"):
        check_fields(targets, "regression", "text", "label")
    check_fields(targets, "regression", "text", "target")

    table = inspect(b"a,b,label\n1,x,c\n2,y,d\n", "csv")
    with pytest.raises(DatasetFileError, match=r"not a numeric table \(non-numeric columns: b\)") as info:
        check_fields(table, "classification", "text", "label")
    assert info.value.field == "data.text_field"

    numbers = inspect(b"a,b\n1,2\n3,4\n", "csv")
    with pytest.raises(DatasetFileError, match="data.text_field: no column 'text'.*causal_lm needs"):
        check_fields(numbers, "causal_lm", "text", "label")
    check_fields(numbers, "regression", "text", "b")  # a numeric table: every other column is a feature
    with pytest.raises(DatasetFileError, match="column 'b' holds string values; regression needs numbers"):
        check_fields(inspect(b"a,b\n1,x\n3,y\n", "csv"), "regression", "text", "b")
