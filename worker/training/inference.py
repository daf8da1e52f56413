"""Using a checkpoint without the dataset: rebuild the model from config.json and predict.

    model, config = load_for_inference("out/checkpoints/step-00000120")
    predict("out/checkpoints/step-00000120", [[0.1, 0.2, ...]])
      classification -> [{"label": "3", "probabilities": {"0": 0.01, ..., "3": 0.92, ...}}]
      regression     -> [{"value": 151.2}]                     (original units)
      causal_lm      -> [{"text": "prompt + generated text", "completion": "generated text"}]
Inputs: vector models take lists of numbers (or dicts of feature name -> number); image models take
flat or nested lists of pixels; token models take strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_weights, read_config
from .data import DataInfo
from .models import build_model


def load_for_inference(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint directory as a ready model in eval mode (LoRA merged in), and its config.json."""
    config = read_config(Path(path))
    description = config["model"]
    if description["kind"] == "huggingface":  # the checkpoint's hf/ folder (models/huggingface.py)
        from .models.huggingface import load_for_inference as load_huggingface

        model, _ = load_huggingface(Path(path), config, torch.device(device))
        return model, config
    model = build_model(description, DataInfo.from_config(config))
    if description.get("lora"):  # the state dict is the adapted model's: wrap the same way, load, merge
        from .lora import apply_lora, merge_for_inference
        from .spec import LoraSpec

        model = apply_lora(model, LoraSpec(**description["lora"]), description)
        load_weights(model, Path(path))
        model = merge_for_inference(model)
    else:
        load_weights(model, Path(path))
    return model.to(device).eval(), config


class Predictor:
    """A checkpoint loaded once, for many predictions (the worker's predict task keeps the last one)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        self.path, self.device = Path(path), torch.device(device)
        self.model, self.config = load_for_inference(path, self.device)
        self.info = DataInfo.from_config(self.config, self.path)

    def predict(self, inputs: list[Any], *, max_new_tokens: int = 64, temperature: float = 0.0,
                top_k: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
        if self.config["model"]["kind"] == "huggingface":
            from .models.huggingface import predict_loaded

            return predict_loaded(self.model, self.info.tokenizer, self.info, inputs, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_k=top_k, seed=seed, device=self.device)
        return _predict_builtin(self.model, self.info, inputs, max_new_tokens, temperature, top_k, seed, self.device)


def _vector(value: Any, info: DataInfo, i: int) -> list[float]:
    if isinstance(value, dict):
        names = info.feature_names or []
        missing = [n for n in names if n not in value]
        if missing:
            raise ValueError(f"inputs[{i}]: missing features {missing[:5]}")
        value = [value[n] for n in names]
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    if flat.size != info.num_features:
        raise ValueError(f"inputs[{i}]: expected {info.num_features} numbers, got {flat.size}")
    return flat.tolist()


def _tensor_inputs(inputs: list[Any], info: DataInfo, device: torch.device) -> dict[str, torch.Tensor]:
    if info.input_kind in ("vector", "image"):
        x = np.asarray([_vector(v, info, i) for i, v in enumerate(inputs)])
        if info.features:
            x = (x - np.asarray(info.features.mean)) / np.asarray(info.features.std)
        t = torch.tensor(x, dtype=torch.float32, device=device)
        return {"inputs": t.view(-1, *info.image_shape) if info.image_shape else t}
    tok, T = info.tokenizer, info.seq_len or 1
    ids = torch.full((len(inputs), T), tok.pad_id, dtype=torch.long)  # type: ignore[union-attr]
    mask = torch.zeros((len(inputs), T), dtype=torch.long)
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise ValueError(f"inputs[{i}]: expected a string")
        tokens = tok.encode(text)[:T] or [tok.pad_id]  # type: ignore[union-attr]
        ids[i, : len(tokens)] = torch.tensor(tokens)
        mask[i, : len(tokens)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@torch.no_grad()
def predict(
    model_dir: str | Path,
    inputs: list[Any],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Predictions of a checkpoint for a list of inputs (see the module docstring)."""
    return Predictor(model_dir, device).predict(inputs, max_new_tokens=max_new_tokens, temperature=temperature,
                                                top_k=top_k, seed=seed)


@torch.no_grad()
def _predict_builtin(model: nn.Module, info: DataInfo, inputs: list[Any], max_new_tokens: int, temperature: float,
                     top_k: int | None, seed: int, device: torch.device) -> list[dict[str, Any]]:
    if info.task == "causal_lm":
        return _generate(model, info, inputs, max_new_tokens, temperature, top_k, seed, device)
    out = model(**_tensor_inputs(inputs, info, device)).float()
    if info.task == "regression":
        mean, std = (info.target.mean[0], info.target.std[0]) if info.target else (0.0, 1.0)
        return [{"value": float(v) * std + mean} for v in out.reshape(-1)]
    probs = torch.softmax(out, dim=-1)
    labels = info.labels or []
    return [
        {"label": labels[int(p.argmax())], "probabilities": {str(labels[j]): float(p[j]) for j in range(len(labels))}}
        for p in probs
    ]


def _generate(model: nn.Module, info: DataInfo, prompts: list[Any], max_new_tokens: int, temperature: float,
              top_k: int | None, seed: int, device: torch.device) -> list[dict[str, Any]]:
    tok = info.tokenizer
    generator = torch.Generator(device=device).manual_seed(seed)
    results = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"inputs[{i}]: expected a prompt string")
        ids = tok.encode(prompt) or [tok.pad_id]  # type: ignore[union-attr]
        x = torch.tensor([ids], dtype=torch.long, device=device)
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)  # type: ignore[operator]
        completion = tok.decode(y[0, len(ids):].tolist())  # type: ignore[union-attr]
        results.append({"text": prompt + completion, "completion": completion})
    return results
