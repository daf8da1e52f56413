"""Building models: the one dispatch point from a model description to an nn.Module.

A *model description* is the JSON-able dict stored as config.json's "model":
    {"kind": "builtin", "builtin": "mlp" | "cnn" | "transformer", "config": {...resolved config...}, "lora": ...}
    {"kind": "huggingface", "source": DIR_OR_HUB_ID, "architecture": "sequence_classification" | "causal_lm",
     "config": {"dropout": ...}, ...}                                   (models/huggingface.py)
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
from ..spec import (BuiltinCnn, BuiltinMlp, BuiltinTransformer, CnnConfig, FromJobModel, HuggingFaceModel, JobSpec,
                    MlpConfig, TransformerConfig)

ModelDescription = dict[str, Any]

BUILTIN_CONFIGS = {"mlp": MlpConfig, "cnn": CnnConfig, "transformer": TransformerConfig}
BUILTIN_INPUTS = {"mlp": "vector", "cnn": "image", "transformer": "tokens"}


def describe_model(spec: JobSpec, base_config: dict[str, Any] | None = None, *,
                   allow_hub_downloads: bool = False) -> ModelDescription:
    """The description; a LoRA job's adapters are recorded under "lora" (inference wraps the same way)."""
    model = spec.model
    lora = {"lora": spec.lora.model_dump()} if spec.lora else {}
    if isinstance(model, (BuiltinMlp, BuiltinCnn, BuiltinTransformer)):
        return {"kind": "builtin", "builtin": model.builtin, "config": model.config.model_dump(), **lora}
    if isinstance(model, FromJobModel):
        if base_config is None:
            raise ConfigError("model.from_job: the worker did not provide the base checkpoint", field="model.from_job")
        base = {k: v for k, v in base_config["model"].items() if k != "lora"}  # the base's adapters are merged
        if base["kind"] == "huggingface":  # the head follows this job's task (a classifier can become an LM)
            base["architecture"] = "causal_lm" if spec.task == "causal_lm" else "sequence_classification"
        return {**base, **lora}
    if isinstance(model, HuggingFaceModel):
        from .huggingface import describe

        return {**describe(model, spec.task, allow_hub_downloads), **lora}
    raise ConfigError("model: unknown model", field="model")


def input_kind(description: ModelDescription) -> str:
    if description["kind"] == "builtin":
        return BUILTIN_INPUTS[description["builtin"]]
    if description["kind"] == "huggingface":
        return "tokens"
    raise ConfigError(f"model: unknown model kind {description['kind']!r}", field="model")


def block_size(description: ModelDescription) -> int | None:
    """The longest sequence the model takes, for models with a fixed context."""
    if description["kind"] == "builtin" and description["builtin"] == "transformer":
        return int(description["config"]["block_size"])
    if description["kind"] == "huggingface":
        return description.get("max_positions")
    return None


def model_tokenizer(description: ModelDescription, allow_hub_downloads: bool = False) -> Any:
    """The tokenizer a model brings (Hugging Face), or None (the data fits one: the character tokenizer)."""
    if description["kind"] == "huggingface":
        from .huggingface import tokenizer_for

        return tokenizer_for(description, allow_hub_downloads)
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


def build_model(description: ModelDescription, info: DataInfo, *, base_checkpoint: Any = None,
                allow_hub_downloads: bool = False) -> nn.Module:
    """`base_checkpoint`: a from_job base's folder; a Hugging Face model loads its weights from its hf/."""
    if description["kind"] == "huggingface":
        from pathlib import Path

        from .huggingface import HF_DIR, build

        weights = Path(base_checkpoint) / HF_DIR if base_checkpoint is not None else None
        return build(description, info, weights_dir=weights, allow_hub_downloads=allow_hub_downloads)
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


def load_base_weights(model: nn.Module, description: ModelDescription, path: Any) -> dict[str, Any]:
    """Transfer: copy a base checkpoint's fitting tensors (builtins); a Hugging Face model loaded them
    already (from the base's hf/ folder, see build_model) and reports what was new."""
    if description["kind"] == "huggingface":
        from .huggingface import transfer_report

        return transfer_report(model) or {"loaded": 0, "reinitialized": [], "unused": []}
    from .transfer import load_matching, read_base_config

    if read_base_config(path)["model"].get("lora"):  # a LoRA base: its adapters merged into its weights first
        return _load_merged_lora_base(model, path)
    return load_matching(model, path)


def _load_merged_lora_base(model: nn.Module, path: Any) -> dict[str, Any]:
    from ..inference import load_for_inference
    from .transfer import copy_matching

    base, _ = load_for_inference(path)  # wraps, loads and merges the adapters
    return copy_matching(model, base.state_dict())


def checkpoint_exporter(model: nn.Module, description: ModelDescription, tokenizer: Any) -> Any:
    """What a checkpoint holds beyond the core's files: hf/ (Hugging Face), adapter/ (LoRA); or None."""
    if description["kind"] != "huggingface" and not description.get("lora"):
        return None
    from .huggingface import exporter

    return exporter(model, description, tokenizer)


def layer_prefixes(model: nn.Module) -> list[str] | None:
    fn = getattr(model, "layer_prefixes", None)
    return fn() if callable(fn) else None
