"""torch.compile on a Hugging Face model: one compilation, then no recompiles step after step (the config is
settled at load: SDPA attention, use_cache off, fixed padded shapes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_helpers import dataset, tiny_bert, topic_rows, words_of

from worker.training.spec import JobSpec


def test_a_compiled_bert_trains_without_recompiling(run, tmp_path: Path, compile_cache: Path) -> None:
    rows = topic_rows(64)
    bert = tiny_bert(tmp_path / "bert", words_of(rows), layers=1)
    did, files = dataset(tmp_path, rows)
    spec = JobSpec(task="classification", model={"huggingface": str(bert)},
                   data={"train": did, "max_length": 16, "validation_split": 0.0},  # no evaluation: train graph only
                   hyperparameters={"max_steps": 3, "batch_size": 8, "compile": True, "learning_rate": 1e-3})
    torch._dynamo.reset()
    saved = torch._dynamo.config.error_on_recompile
    torch._dynamo.config.error_on_recompile = True  # a recompile raises, and the run would fall back to eager
    try:
        result, rep = run(spec, datasets=files, compile_cache_dir=compile_cache)
    finally:
        torch._dynamo.config.error_on_recompile = saved
        torch._dynamo.reset()
    assert result.status == "succeeded"
    assert rep.of_type("compile_failed") == [], rep.of_type("compile_failed")
    assert rep.of_type("compile"), "the first step was compiled"
    assert len(rep.values("train_loss")) == 3
