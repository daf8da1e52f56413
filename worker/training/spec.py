"""The job spec: the one pydantic model the API validates, stores and documents and the worker reads.

It imports pydantic only (never torch), so the API process stays light. Everything that can be checked
without building a model is checked here, so a careless spec gets a 422 naming the field instead of a
failed job. Unknown fields are refused at every level: a typo must never be silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

Task = Literal["classification", "regression", "causal_lm"]
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop"]
SchedulerName = Literal["constant", "linear", "cosine"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]

# Built-in datasets (`builtin:NAME`) and the tasks each one serves. The core's data module implements
# exactly these names; a test keeps the two in step.
BUILTIN_DATASETS: dict[str, frozenset[str]] = {
    "digits": frozenset({"classification"}),  # scikit-learn 8x8 handwritten digits, 10 classes
    "wine": frozenset({"classification"}),  # scikit-learn wine, 13 features, 3 classes
    "breast_cancer": frozenset({"classification"}),  # scikit-learn, 30 features, 2 classes
    "diabetes": frozenset({"regression"}),  # scikit-learn diabetes progression, 10 features
    "tiny_text": frozenset({"causal_lm"}),  # a small English corpus shipped with the project
}

# Which builtin architectures serve which tasks.
BUILTIN_MODEL_TASKS: dict[str, frozenset[str]] = {
    "mlp": frozenset({"classification", "regression"}),
    "cnn": frozenset({"classification", "regression"}),
    "transformer": frozenset({"causal_lm", "classification", "regression"}),
}

# Optimizer arguments each optimizer accepts, with their JSON types. The learning rate and weight decay
# have their own fields (hyperparameters.learning_rate, regularization.weight_decay).
OPTIMIZER_ARGS: dict[str, dict[str, tuple[type, ...]]] = {
    "sgd": {"momentum": (int, float), "dampening": (int, float), "nesterov": (bool,)},
    "adam": {"betas": (list, tuple), "eps": (int, float), "amsgrad": (bool,)},
    "adamw": {"betas": (list, tuple), "eps": (int, float), "amsgrad": (bool,)},
    "rmsprop": {"alpha": (int, float), "eps": (int, float), "momentum": (int, float), "centered": (bool,)},
}

_DATASET_ID = re.compile(r"^[0-9a-fA-F-]{32,36}$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._\-]*$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- model configs of the builtin architectures ---------------------------------------------------


class MlpConfig(StrictModel):
    hidden_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(default=[128, 64], max_length=32)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "tanh"] = "relu"


class CnnConfig(StrictModel):
    channels: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default=[32, 64], min_length=1, max_length=8)
    kernel_size: int = Field(default=3, ge=1, le=11)
    hidden_size: int = Field(default=128, ge=1, le=65536)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


class TransformerConfig(StrictModel):
    """A small GPT-style decoder. `vocab_size` comes from the data's tokenizer when left out."""

    n_layer: int = Field(default=4, ge=1, le=96)
    n_head: int = Field(default=4, ge=1, le=128)
    n_embd: int = Field(default=128, ge=8, le=16384)
    block_size: int = Field(default=128, ge=2, le=32768)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    bias: bool = True
    vocab_size: int | None = Field(default=None, ge=2, le=1_000_000)
    pooling: Literal["mean", "last"] = "mean"  # how a classification/regression head reads the sequence

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class BuiltinMlp(StrictModel):
    builtin: Literal["mlp"]
    config: MlpConfig = MlpConfig()


class BuiltinCnn(StrictModel):
    builtin: Literal["cnn"]
    config: CnnConfig = CnnConfig()


class BuiltinTransformer(StrictModel):
    builtin: Literal["transformer"]
    config: TransformerConfig = TransformerConfig()


class HuggingFaceModel(StrictModel):
    """A pre-trained Hugging Face model: a local directory, or a hub id where the deployment allows it."""

    huggingface: str = Field(min_length=1, max_length=500)
    revision: str | None = Field(default=None, max_length=200)


class FromJobModel(StrictModel):
    """Transfer learning: start from an earlier job's weights (a new head when the label set differs)."""

    from_job: str = Field(min_length=1, max_length=64)
    checkpoint: str = Field(default="best", min_length=1, max_length=64)  # "best" | "last" | a checkpoint id


def _model_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    if "builtin" in value:
        return f"builtin:{value['builtin']}" if isinstance(value["builtin"], str) else None
    for key in ("huggingface", "from_job"):
        if key in value:
            return key
    return None


ModelSpec = Annotated[
    Union[
        Annotated[BuiltinMlp, Tag("builtin:mlp")],
        Annotated[BuiltinCnn, Tag("builtin:cnn")],
        Annotated[BuiltinTransformer, Tag("builtin:transformer")],
        Annotated[HuggingFaceModel, Tag("huggingface")],
        Annotated[FromJobModel, Tag("from_job")],
    ],
    Discriminator(
        _model_kind,
        custom_error_type="invalid_model",
        custom_error_message=(
            "model must be one of {'builtin': 'mlp'|'cnn'|'transformer', 'config': {...}}, "
            "{'huggingface': 'local/dir or hub id'}, {'from_job': JOB_ID, 'checkpoint': 'best'|'last'|ID}"
        ),
    ),
]


# --- the rest of the spec -------------------------------------------------------------------------


# Documented in the JSON schema (the validator below gives the friendlier message), so clients and
# fuzzers know the shape: an uploaded dataset id or builtin:NAME.
_DATASET_REF_SCHEMA = {"pattern": "^(builtin:(" + "|".join(sorted(BUILTIN_DATASETS)) + ")|[0-9a-fA-F-]{32,36})$"}


class DataSpec(StrictModel):
    train: str = Field(min_length=1, max_length=200, description="an uploaded dataset id or builtin:NAME",
                       json_schema_extra=_DATASET_REF_SCHEMA)
    validation: str | None = Field(default=None, max_length=200, json_schema_extra=_DATASET_REF_SCHEMA)
    validation_split: float = Field(default=0.2, ge=0.0, lt=1.0)
    text_field: str = Field(default="text", min_length=1, max_length=200)
    label_field: str = Field(default="label", min_length=1, max_length=200)
    max_length: int = Field(default=128, ge=2, le=32768)

    @field_validator("train", "validation")
    @classmethod
    def _dataset_ref(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith("builtin:"):
            name = value.removeprefix("builtin:")
            if name not in BUILTIN_DATASETS:
                raise ValueError(f"unknown builtin dataset {name!r}; known: {', '.join(sorted(BUILTIN_DATASETS))}")
            return value
        if not _DATASET_ID.match(value):
            raise ValueError("must be an uploaded dataset id or builtin:NAME")
        return value.lower()


class Hyperparameters(StrictModel):
    epochs: int = Field(default=3, ge=1, le=100_000)
    max_steps: int | None = Field(default=None, ge=1, le=100_000_000)
    batch_size: int = Field(default=32, ge=1, le=65536)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=4096)
    optimizer: OptimizerName = "adamw"
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    optimizer_args: dict[str, Any] = Field(default_factory=dict)
    scheduler: SchedulerName = "cosine"
    warmup_steps: int = Field(default=0, ge=0, le=100_000_000)
    precision: Precision = "auto"
    compile: bool = True
    compile_mode: CompileMode | None = None
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    log_every_steps: int = Field(default=1, ge=1, le=1_000_000)
    eval_every_steps: int | None = Field(default=None, ge=1)
    checkpoint_every_steps: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1, le=1000)
    early_stopping_patience: int | None = Field(default=None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _optimizer_args_fit(self) -> Hyperparameters:
        allowed = OPTIMIZER_ARGS[self.optimizer]
        for key, value in self.optimizer_args.items():
            if key in ("lr", "weight_decay"):
                field = "learning_rate" if key == "lr" else "regularization.weight_decay"
                raise ValueError(f"optimizer_args.{key}: set {field} instead")
            if key not in allowed:
                raise ValueError(
                    f"optimizer_args.{key}: not an argument of {self.optimizer} "
                    f"(accepted: {', '.join(sorted(allowed)) or 'none'})"
                )
            types = allowed[key]
            if bool not in types and isinstance(value, bool) or not isinstance(value, types):
                raise ValueError(f"optimizer_args.{key}: expected {' or '.join(t.__name__ for t in types)}")
            if key == "betas":
                if len(value) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in value):
                    raise ValueError("optimizer_args.betas: expected two numbers in [0, 1)")
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"optimizer_args.{key}: must be >= 0")
        if self.optimizer == "sgd" and self.optimizer_args.get("nesterov"):
            if not self.optimizer_args.get("momentum") or self.optimizer_args.get("dampening"):
                raise ValueError("optimizer_args.nesterov: needs momentum > 0 and dampening 0")
        return self


class FreezeSpec(StrictModel):
    patterns: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(default_factory=list, max_length=200)
    train_only: list[Annotated[str, Field(min_length=1, max_length=500)]] | None = Field(default=None, max_length=200)
    first_n_layers: int | None = Field(default=None, ge=0, le=1000)
    unfreeze_after_epochs: int | None = Field(default=None, ge=1, le=100_000)

    @property
    def freezes_anything(self) -> bool:
        return bool(self.patterns) or self.train_only is not None or bool(self.first_n_layers)


class RegularizationSpec(StrictModel):
    weight_decay: float = Field(default=0.0, ge=0.0, le=10.0)
    l1: float = Field(default=0.0, ge=0.0, le=10.0)
    l2: float = Field(default=0.0, ge=0.0, le=10.0)
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    max_grad_norm: float | None = Field(default=None, gt=0.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)


class LoraSpec(StrictModel):
    """LoRA adapters through peft; combinable with freezing (only adapters and unfrozen heads train)."""

    r: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16.0, gt=0.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=100, description="module names to adapt; the model type's usual ones when null"
    )


class ResourcesSpec(StrictModel):
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs for one job; more than 1 runs DDP")
    queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="worker queue; by default gpu when gpus > 0, else cpu")


class JobSpec(StrictModel):
    """A fine-tune job. See the README's spec reference for every field."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "digits-mlp",
                    "task": "classification",
                    "model": {"builtin": "mlp", "config": {"hidden_sizes": [64], "dropout": 0.1}},
                    "data": {"train": "builtin:digits", "validation_split": 0.2},
                    "hyperparameters": {"epochs": 3, "batch_size": 64, "learning_rate": 0.003, "compile": False},
                }
            ]
        },
    )

    name: str | None = Field(default=None, max_length=200, pattern=_NAME)
    task: Task
    model: ModelSpec
    data: DataSpec
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    freeze: FreezeSpec = Field(default_factory=FreezeSpec)
    regularization: RegularizationSpec = Field(default_factory=RegularizationSpec)
    lora: LoraSpec | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_runtime_seconds: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        model = self.model
        if isinstance(model, (BuiltinMlp, BuiltinCnn, BuiltinTransformer)):
            if self.task not in BUILTIN_MODEL_TASKS[model.builtin]:
                raise ValueError(f"model.builtin {model.builtin!r} cannot do task {self.task!r}")
            if self.lora is not None and model.builtin != "transformer":
                raise ValueError("lora: applies to transformer and Hugging Face models only")
        for field in ("train", "validation"):
            ref = getattr(self.data, field)
            if ref and ref.startswith("builtin:"):
                tasks = BUILTIN_DATASETS[ref.removeprefix("builtin:")]
                if self.task not in tasks:
                    raise ValueError(f"data.{field}: {ref} serves {', '.join(sorted(tasks))}, not {self.task!r}")
        if self.task != "classification" and self.regularization.label_smoothing:
            raise ValueError("regularization.label_smoothing: applies to classification only")
        if self.freeze.unfreeze_after_epochs is not None and not self.freeze.freezes_anything:
            raise ValueError("freeze.unfreeze_after_epochs: nothing is frozen to unfreeze")
        return self

    @property
    def queue(self) -> str:
        return self.resources.queue or ("gpu" if self.resources.gpus > 0 else "cpu")

    def dataset_ids(self) -> list[str]:
        """Uploaded datasets (not builtins) the job reads."""
        refs = [self.data.train, self.data.validation]
        return [r for r in refs if r and not r.startswith("builtin:")]
