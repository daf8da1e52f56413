"""Pre-trained Hugging Face models: load, adapt to the task, export a `from_pretrained` directory, predict.

A job's `model.huggingface` is a local directory or a hub id. Nothing is downloaded unless the deployment
allows hub downloads (`RunConfig.allow_hub_downloads`); otherwise a hub id only loads from the local cache
(`local_files_only=True`), and a missing model fails the job before training with a ConfigError. Weights load
from safetensors only (never a pickle), and never with `trust_remote_code` (no code from a model folder runs).

The model trains under its own parameter names (`bert.encoder.layer.0.attention...`), so freeze patterns
are written the way `model.named_parameters()` prints them. What is decided at load and never changed later
(so torch.compile sees one graph): the attention implementation (SDPA, eager where unsupported), dropout
rates (config attributes set before the weights load), `use_cache=False` for training, the head's size and
label names (`num_labels`, `id2label`, `label2id`, `problem_type`), and the pad token id.

Checkpoint layout (see checkpoint.py for the core files):
    model.safetensors, config.json   the core's contract (the training module's state dict; resume/transfer)
    hf/                              `AutoModelFor...from_pretrained("hf")` and `AutoTokenizer.from_pretrained`
                                     load this: weights (LoRA merged in), config, tokenizer files
    adapter/                         LoRA jobs only: adapter_model.safetensors + adapter_config.json (peft)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..reporting import ConfigError
from ..spec import HuggingFaceModel

HF_DIR = "hf"
ADAPTER_DIR = "adapter"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)?$")
# config attributes that hold dropout rates, across the common architectures
DROPOUT_ATTRIBUTES = (
    "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout", "attention_dropout",
    "activation_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "hidden_dropout",
    "seq_classif_dropout", "qa_dropout", "ffn_dropout",
)
# names of the module lists that hold a model's layers (bert/roberta `encoder.layer`, distilbert
# `transformer.layer`, gpt2 `transformer.h`, llama/mistral/qwen `model.layers`, gpt-neox `layers`, t5 `block`)
LAYER_LISTS = ("layer", "layers", "h", "block", "blocks")
EMBEDDING_MODULES = ("embeddings", "wte", "wpe", "embed_tokens", "embed_positions", "word_embeddings",
                     "embed_in", "position_embeddings", "token_type_embeddings")


def _quiet() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()  # load reports and progress bars would flood the worker's log
    logging.disable_progress_bar()


# --- where a model comes from ---------------------------------------------------------------------


def is_local_reference(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


def resolve_source(source: str, revision: str | None, allow_hub_downloads: bool) -> tuple[str, dict[str, Any]]:
    """(what to pass to from_pretrained, its keyword arguments); ConfigError when it cannot load offline."""
    if is_local_reference(source):
        path = Path(source).expanduser().resolve()
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ConfigError(f"model.huggingface: {source} is not a Hugging Face model directory "
                              "(a folder with config.json and weights)", field="model.huggingface")
        return str(path), {"local_files_only": True}
    if not _HUB_ID.match(source):
        raise ConfigError(f"model.huggingface: {source!r} is neither an existing directory nor a hub id "
                          "like 'org/name'", field="model.huggingface")
    return source, {"revision": revision, "local_files_only": not allow_hub_downloads}


def _load_error(source: str, kwargs: dict[str, Any], exc: Exception) -> ConfigError:
    if kwargs.get("local_files_only") and not is_local_reference(source):
        return ConfigError(f"model.huggingface: {source} is not in this worker's Hugging Face cache and hub "
                           "downloads are disabled (FINETUNE_ALLOW_HUB_DOWNLOADS=true allows them, or give a "
                           f"local directory): {type(exc).__name__}: {exc}", field="model.huggingface")
    return ConfigError(f"model.huggingface: {source} cannot be loaded: {type(exc).__name__}: {exc}",
                       field="model.huggingface")


def _auto_config(source: str, kwargs: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    _quiet()
    try:
        return AutoConfig.from_pretrained(source, **kwargs)
    except Exception as exc:  # OSError, ValueError, EnvironmentError... from the hub client
        raise _load_error(source, kwargs, exc) from exc


def max_positions(config: Any) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def describe(model: HuggingFaceModel, task: str, allow_hub_downloads: bool) -> dict[str, Any]:
    """The model description stored in config.json; loading the model's config checks it exists now."""
    source, kwargs = resolve_source(model.huggingface, model.revision, allow_hub_downloads)
    config = _auto_config(source, kwargs)
    return {
        "kind": "huggingface",
        "source": source,
        "revision": model.revision,
        "model_type": getattr(config, "model_type", None),
        "architecture": "causal_lm" if task == "causal_lm" else "sequence_classification",
        "max_positions": max_positions(config),
        "config": {"dropout": None},
    }


# --- the tokenizer --------------------------------------------------------------------------------


class HfTokenizer:
    """A Hugging Face tokenizer behind the core's Tokenizer protocol (data.py, inference)."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer
        if tokenizer.pad_token_id is None:  # GPT-2 and Llama have none: pad with EOS (masked out anyway)
            if tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            else:
                tokenizer.add_special_tokens({"pad_token": "<pad>"})
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_id = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id
        # does the tokenizer start every text with BOS (Llama) -- then a causal-LM example starts with it too
        self.bos_id = bos if bos is not None and tokenizer("a").input_ids[:1] == [bos] else None
        self.chat_template = getattr(tokenizer, "chat_template", None)

    @classmethod
    def load(cls, source: str, kwargs: dict[str, Any]) -> HfTokenizer:
        from transformers import AutoTokenizer

        _quiet()
        try:
            return cls(AutoTokenizer.from_pretrained(source, **kwargs))
        except Exception as exc:
            raise _load_error(source, kwargs, exc) from exc

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        """Plain token ids (no special tokens): corpora, prompts and completions."""
        return list(self.hf(text, add_special_tokens=False).input_ids)

    def encode_truncated(self, text: str, max_length: int) -> list[int]:
        """A whole input for a classifier: special tokens ([CLS] ... [SEP]) kept when truncating."""
        return list(self.hf(text, truncation=True, max_length=max_length).input_ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def to_config(self) -> dict[str, Any]:
        # the files live in the checkpoint's hf/ folder (written by export())
        return {"type": "huggingface", "dir": HF_DIR, "pad_id": self.pad_id}


def tokenizer_for(description: dict[str, Any], allow_hub_downloads: bool) -> HfTokenizer:
    source, kwargs = resolve_source(description["source"], description.get("revision"), allow_hub_downloads)
    return HfTokenizer.load(source, kwargs)


def tokenizer_from_dir(directory: Path) -> HfTokenizer:
    return HfTokenizer.load(str(directory), {"local_files_only": True})


# --- the model ------------------------------------------------------------------------------------


def _auto_class(architecture: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForCausalLM if architecture == "causal_lm" else AutoModelForSequenceClassification


def _set_up_config(config: Any, description: dict[str, Any], info: Any) -> None:
    dropout = (description.get("config") or {}).get("dropout")
    if dropout is not None:
        for attr in DROPOUT_ATTRIBUTES:
            value = getattr(config, attr, None)
            is_rate = isinstance(value, (int, float)) and not isinstance(value, bool)
            if is_rate or (attr == "classifier_dropout" and hasattr(config, attr)):  # None: "use hidden's"
                setattr(config, attr, float(dropout))
    config.use_cache = False  # training never uses the KV cache; generation turns it on itself
    if info.tokenizer is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = info.tokenizer.pad_id  # sequence classifiers find the last real token with it
    if info.task == "classification":
        labels = [str(v) for v in info.labels or []]
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
        config.problem_type = "single_label_classification"
    elif info.task == "regression":
        config.num_labels = 1
        config.id2label, config.label2id = {0: "value"}, {"value": 0}
        config.problem_type = "regression"


def build(description: dict[str, Any], info: Any, *, weights_dir: Path | None = None,
          allow_hub_downloads: bool = False) -> nn.Module:
    """The model for the task, weights from the source (or `weights_dir`: a base job's hf/ folder).

    A head whose shape does not fit (a new label set) is newly initialized; the load report is kept on
    the model as `finetune_transfer` for the job's events.
    """
    if weights_dir is not None:
        source, kwargs = str(weights_dir), {"local_files_only": True}
    else:
        source, kwargs = resolve_source(description["source"], description.get("revision"), allow_hub_downloads)
    config = _auto_config(source, kwargs)
    _set_up_config(config, description, info)
    cls = _auto_class(description["architecture"])
    model, loading = None, {}
    last_error: Exception | None = None
    for attention in ("sdpa", "eager"):  # SDPA where the architecture has it: fused, and compiles cleanly
        try:
            # safetensors only: pickled weights (pytorch_model.bin) from a user's folder are never loaded
            model, loading = cls.from_pretrained(source, config=config, attn_implementation=attention,
                                                 ignore_mismatched_sizes=True, output_loading_info=True,
                                                 dtype=torch.float32, use_safetensors=True, **kwargs)
            break
        except (ValueError, ImportError) as exc:
            last_error = exc
            if "attn" not in str(exc).lower() and "attention" not in str(exc).lower():
                break
        except Exception as exc:
            last_error = exc
            break
    if model is None:
        raise ConfigError(f"model.huggingface: {description['source']} cannot be loaded as a "
                          f"{description['architecture'].replace('_', ' ')} model: "
                          f"{type(last_error).__name__}: {last_error}", field="model.huggingface")
    if len(info.tokenizer.hf) > model.get_input_embeddings().weight.shape[0]:  # a pad token was added
        model.resize_token_embeddings(len(info.tokenizer.hf))
    model.config.use_cache = False
    model.train()
    new = sorted(set(loading.get("missing_keys", [])) | {k[0] if isinstance(k, tuple) else k
                                                         for k in loading.get("mismatched_keys", [])})
    names = [n for n, _ in model.named_parameters()]
    model.finetune_transfer = {"loaded": len(names) - len([n for n in names if n in new]),  # type: ignore[attr-defined]
                               "reinitialized": new, "unused": sorted(loading.get("unexpected_keys", []))}
    _attach_layer_info(model)
    return model


def _attach_layer_info(model: nn.Module) -> None:
    """freeze.first_n_layers: the layer list and the embeddings (frozen with the first layers)."""
    layers_name, layers = None, None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in LAYER_LISTS and len(module):
            layers_name, layers = name, module
            break
    if layers is None:
        return
    prefixes = [f"{layers_name}.{i}." for i in range(len(layers))]
    embeddings = [f"{name}." for name, _ in model.named_modules()
                  if name.rsplit(".", 1)[-1] in EMBEDDING_MODULES and not name.startswith(f"{layers_name}.")]
    # instance attributes (not methods): models/__init__.layer_prefixes and freezing read them
    model.layer_prefixes = lambda: list(prefixes)  # type: ignore[attr-defined]
    model.frozen_with_first_layers = lambda: list(embeddings)  # type: ignore[attr-defined]


def transfer_report(model: nn.Module) -> dict[str, Any] | None:
    base = getattr(model, "get_base_model", None)
    inner = base() if callable(base) else model
    return getattr(inner, "finetune_transfer", None)


# --- export ---------------------------------------------------------------------------------------


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def merged(model: nn.Module) -> nn.Module:
    """The plain model with LoRA merged in: a copy, the training model stays as it is."""
    model = getattr(model, "_orig_mod", model)
    if not is_peft(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def exporter(model: nn.Module, description: dict[str, Any], tokenizer: HfTokenizer | None) -> Callable[[Path], None]:
    """Writes hf/ (and adapter/ for LoRA) into a checkpoint directory being written."""

    def write(directory: Path) -> None:
        module = getattr(model, "_orig_mod", model)
        if is_peft(module):
            module.save_pretrained(str(directory / ADAPTER_DIR))
        if description["kind"] != "huggingface":
            return
        plain = merged(module)
        plain.config.use_cache = True  # for whoever generates with the download
        try:
            plain.save_pretrained(str(directory / HF_DIR))
        finally:
            if plain is module:
                plain.config.use_cache = False
        if tokenizer is not None:
            tokenizer.hf.save_pretrained(str(directory / HF_DIR))

    return write


# --- inference ------------------------------------------------------------------------------------


def load_for_inference(path: Path, config: dict[str, Any], device: torch.device) -> tuple[nn.Module, HfTokenizer]:
    description = config["model"]
    directory = Path(path) / HF_DIR
    cls = _auto_class(description["architecture"])
    _quiet()
    try:
        model = cls.from_pretrained(str(directory), local_files_only=True, dtype=torch.float32, attn_implementation="sdpa")
    except (ValueError, ImportError):
        model = cls.from_pretrained(str(directory), local_files_only=True, dtype=torch.float32)
    return model.to(device).eval(), tokenizer_from_dir(directory)


@torch.no_grad()
def predict_loaded(model: nn.Module, tokenizer: HfTokenizer, info: Any, inputs: list[Any], *, max_new_tokens: int,
                   temperature: float, top_k: int | None, seed: int, device: torch.device) -> list[dict[str, Any]]:
    for i, value in enumerate(inputs):
        if not isinstance(value, str):
            raise ValueError(f"inputs[{i}]: expected a string")
    if info.task == "causal_lm":
        return _generate(model, tokenizer, inputs, max_new_tokens, temperature, top_k, seed, device)
    T = info.seq_len or 512
    rows = [tokenizer.encode_truncated(text, T) for text in inputs]
    ids = torch.full((len(rows), T), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    if info.task == "regression":
        mean, std = (info.target.mean[0], info.target.std[0]) if info.target else (0.0, 1.0)
        return [{"value": float(v) * std + mean} for v in logits.reshape(-1)]
    probs = torch.softmax(logits, dim=-1)
    labels = info.labels or []
    return [{"label": labels[int(p.argmax())],
             "probabilities": {str(labels[j]): float(p[j]) for j in range(len(labels))}} for p in probs]


def _generate(model: nn.Module, tokenizer: HfTokenizer, prompts: list[str], max_new_tokens: int, temperature: float,
              top_k: int | None, seed: int, device: torch.device) -> list[dict[str, Any]]:
    torch.manual_seed(seed)
    results = []
    for prompt in prompts:
        ids = ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + tokenizer.encode(prompt)
        if not ids:
            ids = [tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.pad_id]
        x = torch.tensor([ids], dtype=torch.long, device=device)
        sampling = temperature > 0
        out = model.generate(
            input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=sampling,
            temperature=temperature if sampling else None, top_k=top_k if sampling else None,
            top_p=None, pad_token_id=tokenizer.pad_id, eos_token_id=tokenizer.eos_id, use_cache=True,
        )
        completion = tokenizer.decode(out[0, len(ids):].tolist())
        results.append({"text": prompt + completion, "completion": completion})
    return results
