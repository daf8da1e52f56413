"""Losses and metrics per task.

- classification: cross-entropy (with label smoothing) and accuracy;
- regression: MSE on standardized targets (the training loss), MAE and RMSE reported in original units;
- causal_lm: token cross-entropy (-100 ignored) and perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, DataInfo, Tensors
from .batches import eval_batches


def model_output(out: object) -> torch.Tensor:
    """Builtin models return logits; Hugging Face ones return an object with `.logits`."""
    return out if isinstance(out, torch.Tensor) else out.logits  # type: ignore[attr-defined]


def split_batch(batch: Tensors) -> tuple[Tensors, torch.Tensor]:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return inputs, batch["labels"]


def data_loss(task: str, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean loss of a batch, in fp32 whatever the autocast dtype of the logits."""
    logits = logits.float()
    if task == "classification":
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if task == "regression":  # a (B, 1) head (Hugging Face) against (B,) targets
        return F.mse_loss(logits.reshape(labels.shape), labels)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


class _Totals:
    def __init__(self) -> None:
        self.loss: float | torch.Tensor = 0.0
        self.count: float | torch.Tensor = 0.0
        self.correct: float | torch.Tensor = 0.0
        self.abs_err: float | torch.Tensor = 0.0
        self.sq_err: float | torch.Tensor = 0.0


@torch.no_grad()
def evaluate(
    forward: Callable[[Tensors], torch.Tensor],
    val: Tensors,
    info: DataInfo,
    batch_size: int,
) -> dict[str, float]:
    """Metrics over the whole validation split; `forward` maps model inputs to logits (autocast inside)."""
    t = _Totals()
    for batch, n in eval_batches(val, batch_size):
        inputs, labels = split_batch(batch)
        logits = forward(inputs)[:n].float()
        labels = labels[:n]
        _accumulate(t, info, logits, labels)
    return _summarize(t, info)


def _accumulate(t: _Totals, info: DataInfo, logits: torch.Tensor, labels: torch.Tensor) -> None:
    if info.task == "classification":
        t.loss += F.cross_entropy(logits, labels, reduction="sum")
        t.correct += (logits.argmax(-1) == labels).sum()
        t.count += len(labels)
    elif info.task == "regression":
        logits = logits.reshape(labels.shape)
        t.loss += F.mse_loss(logits, labels, reduction="sum")
        scale = info.target.std[0] if info.target else 1.0
        diff = (logits - labels) * scale
        t.abs_err += diff.abs().sum()
        t.sq_err += (diff * diff).sum()
        t.count += len(labels)
    else:
        flat = labels.flatten()
        t.loss += F.cross_entropy(logits.flatten(0, 1), flat, ignore_index=IGNORE_INDEX, reduction="sum")
        t.count += (flat != IGNORE_INDEX).sum()


def _summarize(t: _Totals, info: DataInfo) -> dict[str, float]:
    # totals stay on the device until here: one sync per evaluation, not one per batch
    t.loss, t.count, t.correct, t.abs_err, t.sq_err = (
        float(v) for v in (t.loss, t.count, t.correct, t.abs_err, t.sq_err)
    )
    n = max(t.count, 1.0)
    out = {"val_loss": t.loss / n}
    if info.task == "classification":
        out["val_accuracy"] = t.correct / n
    elif info.task == "regression":
        out["val_mae"] = t.abs_err / n
        out["val_rmse"] = math.sqrt(t.sq_err / n)
    else:
        out["val_perplexity"] = math.exp(min(out["val_loss"], 50.0))
    return out


def count_parameters(params: Iterable[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params)
