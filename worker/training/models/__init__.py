"""Building models: the one dispatch point from a model description to an nn.Module.

A *model description* is the JSON-able dict stored as config.json's "model":
    {"kind": "builtin", "builtin": "mlp" | "cnn" | "transformer", "config": {...resolved config...}}
`describe_model` turns the job spec's `model` into one (for from_job, the base checkpoint's own), and
`build_model` builds it for the data. Other kinds plug in here: add a branch to `describe_model`,
`input_kind` and `build_model` (e.g. "huggingface", returning a module that takes the batch convention
of worker.training.data and returns logits or an object with `.logits`).

Models expose `layer_prefixes()` (parameter-name prefixes of their layers, input side first) for
freeze.first_n_layers, and optionally `frozen_with_first_layers()` (e.g. embeddings).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..data import DataInfo
from ..reporting import ConfigError
from ..spec import BuiltinCnn, BuiltinMlp, BuiltinTransformer, CnnConfig, FromJobModel, JobSpec, MlpConfig, TransformerConfig

ModelDescription = dict[str, Any]

BUILTIN_CONFIGS = {"mlp": MlpConfig, "cnn": CnnConfig, "transformer": TransformerConfig}
BUILTIN_INPUTS = {"mlp": "vector", "cnn": "image", "transformer": "tokens"}


def describe_model(spec: JobSpec, base_config: dict[str, Any] | None = None) -> ModelDescription:
    model = spec.model
    if isinstance(model, (BuiltinMlp, BuiltinCnn, BuiltinTransformer)):
        return {"kind": "builtin", "builtin": model.builtin, "config": model.config.model_dump()}
    if isinstance(model, FromJobModel):
        if base_config is None:
            raise ConfigError("model.from_job: the worker did not provide the base checkpoint", field="model.from_job")
        return dict(base_config["model"])
    raise ConfigError("model.huggingface: Hugging Face models are not available in this worker yet", field="model")


def input_kind(description: ModelDescription) -> str:
    if description["kind"] == "builtin":
        return BUILTIN_INPUTS[description["builtin"]]
    raise ConfigError(f"model: unknown model kind {description['kind']!r}", field="model")


def block_size(description: ModelDescription) -> int | None:
    """The longest sequence the model takes, for models with a fixed context."""
    if description["kind"] == "builtin" and description["builtin"] == "transformer":
        return int(description["config"]["block_size"])
    return None


def resolve_description(description: ModelDescription, info: DataInfo) -> ModelDescription:
    """Fill in what the data decides (the transformer's vocabulary size)."""
    if description["kind"] == "builtin" and description["builtin"] == "transformer":
        config = dict(description["config"])
        vocab = info.tokenizer.vocab_size if info.tokenizer else None
        if config.get("vocab_size") is None:
            config["vocab_size"] = vocab
        elif vocab is not None and config["vocab_size"] < vocab:
            raise ConfigError(f"model.config.vocab_size ({config['vocab_size']}) is smaller than the "
                              f"tokenizer's vocabulary ({vocab}); leave it out to size it from the data",
                              field="model.config.vocab_size")
        return {**description, "config": config}
    return description


def build_model(description: ModelDescription, info: DataInfo) -> nn.Module:
    if description["kind"] != "builtin":
        raise ConfigError(f"model: unknown model kind {description['kind']!r}", field="model")
    name = description["builtin"]
    config = BUILTIN_CONFIGS[name](**description["config"])
    if name == "mlp":
        from .mlp import Mlp

        return Mlp(config, info.num_features or 0, info.num_outputs or 1)  # type: ignore[arg-type]
    if name == "cnn":
        from .cnn import Cnn

        return Cnn(config, info.image_shape, info.num_outputs or 1)  # type: ignore[arg-type]
    from .transformer import Transformer

    return Transformer(config, info.num_outputs)  # type: ignore[arg-type]


def layer_prefixes(model: nn.Module) -> list[str] | None:
    fn = getattr(model, "layer_prefixes", None)
    return fn() if callable(fn) else None
