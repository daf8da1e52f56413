"""What POST /jobs/{id}/predict takes and what it returns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .models import Prediction

MAX_INPUTS = 64
MAX_TEXT_CHARS = 20_000
MAX_NUMBERS = 100_000

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Vector = Annotated[list[Number], Field(max_length=MAX_NUMBERS)]
NamedFeatures = Annotated[dict[str, Number], Field(max_length=MAX_NUMBERS)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": ["the match ended in a draw"], "checkpoint": "best"}]},
    )

    inputs: list[Text | Vector | NamedFeatures] = Field(
        min_length=1, max_length=MAX_INPUTS,
        description="texts (transformer and Hugging Face models), or lists of numbers / {feature: number} "
                    "(mlp, cnn)")
    checkpoint: str = Field(default="best", min_length=1, max_length=64, description="best, last or a checkpoint id")
    max_new_tokens: int = Field(default=32, ge=1, le=512, description="causal LM: tokens to generate")
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="causal LM: 0 is greedy")


class PredictionError(BaseModel):
    type: str
    message: str


class PredictionRead(BaseModel):
    id: str
    job_id: str
    checkpoint_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    outputs: list[dict[str, Any]] | None = Field(
        description="per input: {label, probabilities} (classification), {value} (regression), "
                    "{text, completion} (causal LM)")
    error: PredictionError | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Prediction) -> PredictionRead:
        error = PredictionError(type=row.error_type or "failed", message=row.error or "") if row.status == "failed" else None
        return cls(id=row.id, job_id=row.job_id, checkpoint_id=row.checkpoint_id, status=row.status,  # type: ignore[arg-type]
                   outputs=row.outputs, error=error, created_at=row.created_at, finished_at=row.finished_at)
