"""The README documents every field of the job spec and every setting, so the reference cannot drift."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from app.settings import Settings
from worker.training.spec import CnnConfig, JobSpec, MlpConfig, TransformerConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        if name == "model" and not prefix:
            continue  # a union of model kinds: documented per kind below
        for arg in typing.get_args(field.annotation) or (field.annotation,):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _paths(arg, f"{prefix}{name}.")
    return out


def test_every_job_spec_field_is_in_the_readme() -> None:
    missing = [p for p in _paths(JobSpec) if f"`{p}`" not in README and f"`{p}." not in README]
    for config in (MlpConfig, CnnConfig, TransformerConfig):
        missing += [f"model.config.{n}" for n in config.model_fields if f"`{n}`" not in README]
    assert missing == []


def test_every_setting_is_in_the_readme() -> None:
    missing = [n for n in Settings.model_fields if f"FINETUNE_{n.upper()}" not in README]
    assert missing == []
