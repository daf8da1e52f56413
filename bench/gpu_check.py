"""GPU check of the training core: a GPT-2-small-sized builtin transformer trained through run_training.

    bash bench/gpu_check.sh                 # on a CUDA machine: eager vs compiled, bf16
    python bench/gpu_check.py --dry-run     # the same code path on the CPU with a tiny config

Model: n_layer 12, n_head 12, n_embd 768, block 1024, vocab 50257 (~124M parameters, output tied to the
embedding), on the tiny_text corpus in 1024-character sequences (the vocabulary is sized like GPT-2's;
the corpus only uses a few dozen ids, which changes nothing about the arithmetic). Each mode runs the
real core (bf16 autocast, fused AdamW, clipping, the reporting loop) with a reporter that timestamps
steps; the steady-state rate is measured between logging steps, where the core synchronizes the GPU.

Prints tokens/s eager and compiled, their ratio, the compile time, and model FLOP utilisation:
    MFU = tokens/s x (6 N + 12 L T C) / peak,  N = parameters without position embeddings (PaLM, app. B)
with peak = 790 TFLOP/s (dense bf16, --peak-tflops to change).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from worker.training import run_training  # noqa: E402
from worker.training.config import RunConfig  # noqa: E402
from worker.training.models.transformer import Transformer  # noqa: E402
from worker.training.reporting import QuietReporter  # noqa: E402
from worker.training.spec import JobSpec, TransformerConfig  # noqa: E402

GPT2_SMALL = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "vocab_size": 50257,
              "dropout": 0.0, "bias": True}
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "vocab_size": 512, "dropout": 0.0, "bias": True}


class StepClock(QuietReporter):
    """A reporter that keeps the time of each step, and of the logging steps (where the GPU is synced)."""

    def __init__(self) -> None:
        self.stamps: dict[int, float] = {}
        self.logged: set[int] = set()
        self.compile_seconds: float | None = None
        self.warnings: list[str] = []
        self.last_loss: float | None = None

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if "train_loss" in values:
            self.logged.add(step)
            self.last_loss = values["train_loss"]

    def event(self, level: str, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        if type == "compile":
            self.compile_seconds = (data or {}).get("seconds")
        if level == "warning":
            self.warnings.append(message)

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        self.stamps[step] = time.perf_counter()


def spec_for(model: dict[str, Any], steps: int, batch: int, compile: bool, precision: str, log_every: int) -> JobSpec:
    return JobSpec(
        task="causal_lm",
        model={"builtin": "transformer", "config": model},
        data={"train": "builtin:tiny_text", "validation_split": 0.0, "max_length": model["block_size"]},
        hyperparameters={"max_steps": steps, "batch_size": batch, "learning_rate": 6e-4, "optimizer": "adamw",
                         "scheduler": "cosine", "warmup_steps": 2, "precision": precision, "compile": compile,
                         "log_every_steps": log_every, "keep_checkpoints": 1},
        regularization={"max_grad_norm": 1.0, "weight_decay": 0.1},
    )


def measure(model: dict[str, Any], args: argparse.Namespace, compile: bool, device: str) -> dict[str, Any]:
    clock = StepClock()
    spec = spec_for(model, args.steps, args.batch_size, compile, args.precision, args.log_every)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as out:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = run_training(RunConfig(spec=spec, output_dir=Path(out), device=device,
                                        compile_cache_dir=args.cache_dir), clock)
    # steady state: from the first logging step after warm-up to the last one (both GPU-synced)
    logged = sorted(s for s in clock.logged if s >= args.warmup)
    if len(logged) < 2:
        raise SystemExit("gpu_check: too few logging steps to measure; raise --steps or lower --log-every")
    first, last = logged[0], logged[-1]
    tokens = (last - first) * args.batch_size * model["block_size"]
    seconds = clock.stamps[last] - clock.stamps[first]
    return {
        "tokens_per_s": tokens / seconds,
        "compile_s": clock.compile_seconds,
        "loss": clock.last_loss,
        "warnings": clock.warnings,
        "status": result.status,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny config on the CPU, fp32 (checks the code path)")
    parser.add_argument("--no-compile", action="store_true", help="only the eager run")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of steady state")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=790.0)
    parser.add_argument("--cache-dir", type=Path, default=None, help="persistent compile cache")
    args = parser.parse_args()

    if args.dry_run:
        device, model, args.precision = "cpu", TINY, "fp32"
        args.steps, args.warmup, args.batch_size = args.steps or 12, args.warmup or 2, args.batch_size or 4
        args.log_every = min(args.log_every, 2)
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device is visible to torch "
                     f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); nothing to measure. "
                     "Run with --dry-run for the CPU smoke test.")
        device, model, args.precision = "cuda", GPT2_SMALL, "bf16"
        args.steps, args.warmup, args.batch_size = args.steps or 40, args.warmup or 10, args.batch_size or 16
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")

    with torch.device("meta"):  # count without allocating
        meta = Transformer(TransformerConfig(**model), None)
    n_params = sum(p.numel() for p in meta.parameters())
    flops_per_token = meta.num_flops_per_token(model["block_size"])
    print(f"model: {model} -> {n_params / 1e6:.1f}M parameters; {flops_per_token / 1e9:.3f} GFLOP per token "
          f"(training); batch {args.batch_size} x {model['block_size']} tokens; {args.precision}")

    results = {"eager": measure(model, args, compile=False, device=device)}
    if not args.no_compile:
        results["compiled"] = measure(model, args, compile=True, device=device)
    peak = args.peak_tflops * 1e12
    for name, r in results.items():
        mfu = r["tokens_per_s"] * flops_per_token / peak
        extra = f", compile {r['compile_s']:.1f}s" if r["compile_s"] else ""
        mem = f", peak memory {r['peak_mem_gib']:.1f} GiB" if r["peak_mem_gib"] else ""
        print(f"{name:>9}: {r['tokens_per_s']:,.0f} tokens/s, MFU {mfu * 100:.1f}% of {args.peak_tflops:.0f} TFLOP/s"
              f"{extra}{mem}; last train_loss {r['loss']:.3f}; {r['status']}")
        for w in r["warnings"]:
            print(f"           warning: {w[:300]}")
    if "compiled" in results:
        print(f"compiled/eager: {results['compiled']['tokens_per_s'] / results['eager']['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
