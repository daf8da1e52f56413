"""LoRA adapters (spec.lora) through peft, for Hugging Face models and the builtin transformer.

`apply_lora` wraps the model after its weights are loaded (and transferred) and before freezing: peft
freezes every base weight and adds trainable low-rank adapters to the target modules; a task head that is
new for this job (a classifier, a regression head) is trained whole (`modules_to_save`). Freeze patterns
still apply on top (they see the original parameter names; see freezing.canonical_name), so "LoRA on the
top layers only" is `lora` + `freeze.patterns`.

Checkpoints hold the wrapped model's state dict (adapters included, for resume); the export writes the
adapter alone (`adapter/`, peft's format) and, for Hugging Face models, the merged model (`hf/`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .reporting import ConfigError
from .spec import LoraSpec

# every linear layer of the builtin transformer's blocks
BUILTIN_TARGETS = ["c_attn", "c_proj", "c_fc"]


def apply_lora(model: nn.Module, spec: LoraSpec, description: dict[str, Any]) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    kind = description["kind"]
    if kind == "huggingface":
        task_type = "CAUSAL_LM" if description["architecture"] == "causal_lm" else "SEQ_CLS"
        config = LoraConfig(task_type=task_type, r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                            target_modules=spec.target_modules)  # None: peft's usual modules for the model type
    else:
        head = ["head"] if getattr(model, "head", None) is not None else None
        config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                            target_modules=spec.target_modules or BUILTIN_TARGETS, modules_to_save=head)
    try:
        return get_peft_model(model, config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"lora: {exc} (set lora.target_modules to names of the model's linear layers, e.g. "
                          f"{', '.join(_linear_names(model)[:6])})", field="lora.target_modules") from exc


def _linear_names(model: nn.Module) -> list[str]:
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    return sorted(names)


def merge_for_inference(model: nn.Module) -> nn.Module:
    """A loaded LoRA model as a plain module with the adapters merged in (inference is then as fast)."""
    if not hasattr(model, "merge_and_unload"):
        return model
    inner = model.get_base_model()
    config = getattr(inner, "config", None)
    if config is not None and hasattr(config, "model_dump"):  # a builtin's pydantic config: peft reads dicts
        inner.config = config.model_dump()
        try:
            return model.merge_and_unload()
        finally:
            inner.config = config
    return model.merge_and_unload()
