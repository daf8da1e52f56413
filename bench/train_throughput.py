"""Training throughput on the CPU: the same fine-tune three ways, side by side.

    python bench/train_throughput.py                 # the builtin transformer on tiny_text
    python bench/train_throughput.py --workload mlp  # a wide MLP on digits

1. a plain eager PyTorch loop (same model, data order, AdamW, schedule and clipping; nothing else);
2. the training core (worker.training), compiled with torch.compile (and, for reference, eager);
3. the Hugging Face Trainer on the same module wrapped to return {"loss", "logits"}.
Also: the compile time (first step) apart from steady state, and the per-step reporting overhead
(the core with an in-memory recording reporter and metrics every step, against a no-op reporter that
logs every 1000 steps, plus the time spent inside the logging path itself).

Measuring on a shared machine: the ways run in interleaved rounds (the core pauses through
`should_stop` and continues in the next round), each step is timed, and throughput comes from the
median step time after warm-up, so a burst of load elsewhere hits every way alike.
The first run compiles from scratch (a minute or more on 2 cores); the Inductor cache in --cache-dir
makes later runs start in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from worker.training.batches import TrainBatches  # noqa: E402
from worker.training.compile import compile_settings  # noqa: E402
from worker.training.config import RunConfig  # noqa: E402
from worker.training.data import prepare_data  # noqa: E402
from worker.training.models import block_size, build_model, describe_model, input_kind, resolve_description  # noqa: E402
from worker.training.optim import LrSchedule, param_groups  # noqa: E402
from worker.training.spec import JobSpec  # noqa: E402
from worker.training.tasks import data_loss, split_batch  # noqa: E402
from worker.training.trainer import Recipe  # noqa: E402

WORKLOADS: dict[str, dict[str, Any]] = {
    "transformer": {
        "task": "causal_lm",
        "model": {"builtin": "transformer",
                  "config": {"n_layer": 4, "n_head": 4, "n_embd": 32, "block_size": 32, "dropout": 0.1}},
        "data": {"train": "builtin:tiny_text", "validation_split": 0.05},
        "batch_size": 16,
        "learning_rate": 3e-3,
    },
    "mlp": {
        "task": "classification",
        "model": {"builtin": "mlp", "config": {"hidden_sizes": [256, 256, 256], "dropout": 0.1, "activation": "gelu"}},
        "data": {"train": "builtin:digits", "validation_split": 0.05},
        "batch_size": 128,
        "learning_rate": 1e-3,
    },
}


def job_spec(name: str, total_steps: int, compile: bool, log_every: int) -> JobSpec:
    w = WORKLOADS[name]
    return JobSpec(
        task=w["task"], model=w["model"], data=w["data"],
        hyperparameters={"max_steps": total_steps, "batch_size": w["batch_size"], "learning_rate": w["learning_rate"],
                         "optimizer": "adamw", "scheduler": "cosine", "warmup_steps": 10, "compile": compile,
                         "log_every_steps": log_every, "seed": 0},
        regularization={"max_grad_norm": 1.0},
    )


# --- reporters ----------------------------------------------------------------------------------


class PausingReporter:
    """A no-op reporter that times each step (progress) and pauses the run after `budget` steps."""

    def __init__(self) -> None:
        self.budget = 0
        self.stamps: list[tuple[float, float]] = []  # (wall, this process's CPU time)
        self.compile_seconds: float | None = None

    def metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def event(self, level: str, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        if type == "compile":
            self.compile_seconds = (data or {}).get("seconds")
        elif type == "compile_failed":
            print(f"  warning: {message[:300]}")

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        self.stamps.append(clocks())
        self.budget -= 1

    def checkpoint_saved(self, info: Any) -> None:
        pass

    def checkpoint_removed(self, name: str) -> None:
        pass

    def should_stop(self) -> bool:
        return self.budget <= 0


class RecordingReporter(PausingReporter):
    """Keeps every metric and event in memory, as a test or the worker's SQL reporter would buffer them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict[str, float]]] = []
        self.events: list[tuple[str, str]] = []

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.records.append((step, dict(values)))

    def event(self, level: str, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().event(level, type, message, data)
        self.events.append((type, message))


# --- the three ways -----------------------------------------------------------------------------


class PlainLoop:
    """What someone would write by hand: the same model, data order, optimizer, schedule and clipping."""

    def __init__(self, spec: JobSpec) -> None:
        description = describe_model(spec)
        data = prepare_data(spec, {}, input_kind(description), block_size=block_size(description))
        torch.manual_seed(0)
        self.model = build_model(resolve_description(description, data.info), data.info)
        self.task = spec.task
        self.batches = TrainBatches(data.train, spec.hyperparameters.batch_size, 0, torch.device("cpu"))
        self.opt = torch.optim.AdamW(param_groups(self.model.parameters(), 0.0), lr=spec.hyperparameters.learning_rate,
                                     fused=True)
        hp = spec.hyperparameters
        self.schedule = LrSchedule(hp.scheduler, hp.learning_rate, hp.warmup_steps, hp.max_steps or 1)
        self.step = 0
        self.times: list[tuple[float, float]] = []

    def run(self, steps: int) -> None:
        for _ in range(steps):
            start = clocks()
            epoch, index = divmod(self.step, len(self.batches))
            inputs, labels = split_batch(self.batches.batch(epoch, index))
            self.schedule.apply(self.opt, self.step)
            loss = data_loss(self.task, self.model(**inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            self.times.append(elapsed(start, clocks()))


class CoreRun:
    """The core's Recipe, set up once and run in slices: each slice ends through should_stop.
    (run_training wraps a recipe in compile_settings; main() does that here, around every slice.)"""

    def __init__(self, spec: JobSpec, out: Path, cache_dir: Path | None, reporter: PausingReporter) -> None:
        self.reporter = reporter
        self.recipe = Recipe(RunConfig(spec=spec, output_dir=out, compile_cache_dir=cache_dir, resume=False), reporter)
        self.recipe.setup()
        self.times: list[tuple[float, float]] = []

    def run(self, steps: int) -> list[tuple[float, float]]:
        self.reporter.budget, self.reporter.stamps = steps, []
        start = clocks()
        self.recipe.train()
        stamps = [start, *self.reporter.stamps]
        times = [elapsed(a, b) for a, b in zip(stamps, stamps[1:])]
        self.times += times
        return times


class HFTrainerRun:
    """transformers.Trainer on the same module, wrapped to return {"loss", "logits"}; one Trainer per slice."""

    def __init__(self, spec: JobSpec, out: Path) -> None:
        from transformers import TrainerCallback

        self.loop = PlainLoop(spec)  # the same model, data and seed
        self.spec, self.out = spec, out
        self.times: list[tuple[float, float]] = []
        times = self.times

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
                self.start = clocks()

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
                times.append(elapsed(self.start, clocks()))

        self.callback = StepTimer()
        task, model = spec.task, self.loop.model
        keys = [k for k in self.loop.batches.tensors if k != "labels"]

        class Wrapped(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, labels: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
                # the Trainer adds its own keyword arguments (num_items_in_batch): pass on the batch only
                logits = self.model(**{k: kwargs[k] for k in keys})
                return {"loss": data_loss(task, logits, labels), "logits": logits}

        self.wrapped = Wrapped()
        rows = self.loop.batches.tensors
        n = self.loop.batches.n
        self.dataset = [{k: v[i] for k, v in rows.items()} for i in range(n)]

    def run(self, steps: int) -> None:
        from transformers import PrinterCallback, Trainer, TrainingArguments

        hp = self.spec.hyperparameters
        args = TrainingArguments(
            output_dir=str(self.out), per_device_train_batch_size=hp.batch_size, max_steps=steps,
            learning_rate=hp.learning_rate, lr_scheduler_type="cosine", warmup_steps=hp.warmup_steps,
            weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused", use_cpu=True, seed=0,
            dataloader_drop_last=True, dataloader_num_workers=0, save_strategy="no", eval_strategy="no",
            logging_steps=10**6, report_to=[], disable_tqdm=True, remove_unused_columns=False,
        )
        trainer = Trainer(model=self.wrapped, args=args, train_dataset=self.dataset, callbacks=[self.callback])
        trainer.remove_callback(PrinterCallback)  # its end-of-train line would interleave with ours
        trainer.train()


# --- measuring ----------------------------------------------------------------------------------


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def elapsed(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return b[0] - a[0], b[1] - a[1]


def rates(times: list[tuple[float, float]], warmup: int, batch: int) -> tuple[float, float]:
    """Samples per second of wall time and per second of this process's CPU time (median steps)."""
    steady = times[warmup:] or times
    return batch / statistics.median(t[0] for t in steady), batch / statistics.median(t[1] for t in steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="transformer")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds of every way")
    parser.add_argument("--steps", type=int, default=10, help="steps per way per round")
    parser.add_argument("--warmup", type=int, default=3, help="first steps of each way left out of steady state")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads; 1 by default: on a shared 2-core machine two OpenMP threads "
                             "stall whenever another process takes a core (use 2 on a quiet machine)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "finetune-bench-compile-cache")
    parser.add_argument("--skip-hf", action="store_true", help="leave out the Hugging Face Trainer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with compile_settings(args.cache_dir):  # what run_training applies around a job
        measure(args)


def measure(args: argparse.Namespace) -> None:
    total = 4 * args.rounds * args.steps + 10  # more than any way runs: no run reaches its end
    batch = WORKLOADS[args.workload]["batch_size"]
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    print(f"workload {args.workload}: {WORKLOADS[args.workload]['model']}, batch {batch}; torch {torch.__version__}, "
          f"{args.threads} thread(s); {args.rounds} interleaved rounds x {args.steps} steps per way")

    plain = PlainLoop(job_spec(args.workload, total, False, 1000))
    eager_core = CoreRun(job_spec(args.workload, total, False, 1000), work / "eager", None, PausingReporter())
    t0 = time.perf_counter()
    compiled = CoreRun(job_spec(args.workload, total, True, 1000), work / "compiled", args.cache_dir, PausingReporter())
    compiled.run(1)  # the first step compiles forward and backward
    first_step = time.perf_counter() - t0
    hf = None if args.skip_hf else HFTrainerRun(job_spec(args.workload, total, False, 1000), work / "hf")
    # reporting: the same compiled recipe with its reporter swapped per slice (metrics every step vs every 1000)
    recording, quiet = RecordingReporter(), compiled.reporter
    noisy_times: list[tuple[float, float]] = []
    quiet_times: list[tuple[float, float]] = []
    in_log = {"seconds": 0.0}
    original_log = Recipe._log

    def timed_log(self: Recipe, lr: float) -> None:
        start = time.perf_counter()
        original_log(self, lr)
        in_log["seconds"] += time.perf_counter() - start

    compiled_times: list[tuple[float, float]] = []
    for r in range(args.rounds):
        plain.run(args.steps)
        eager_core.run(args.steps)
        compiled_times += compiled.run(args.steps)
        if hf is not None:
            hf.run(args.steps)
        for reporter, times, log_every in ((quiet, quiet_times, 1000), (recording, noisy_times, 1)):
            compiled.reporter = compiled.recipe.reporter = reporter
            compiled.recipe.hp = compiled.recipe.hp.model_copy(update={"log_every_steps": log_every})
            Recipe._log = timed_log if reporter is recording else original_log  # type: ignore[method-assign]
            times += compiled.run(args.steps)
        Recipe._log = original_log  # type: ignore[method-assign]
        compiled.reporter = compiled.recipe.reporter = quiet
        print(f"  round {r + 1}/{args.rounds} done", flush=True)

    w = args.warmup
    table = {
        "plain eager loop": rates(plain.times, w, batch),
        "core, eager": rates(eager_core.times, w, batch),
        "core, compiled": rates(compiled_times, w, batch),
    }
    if hf is not None:
        table["HF Trainer (eager)"] = rates(hf.times, w, batch)
    base = table["plain eager loop"]
    print(f"\n{'way':<20}{'samples/s':>11}{'vs loop':>9}   {'samples/CPU-s':>14}{'vs loop':>9}")
    for name, (wall, cpu) in table.items():
        print(f"{name:<20}{wall:>11.1f}{wall / base[0]:>8.2f}x   {cpu:>14.1f}{cpu / base[1]:>8.2f}x")
    if hf is not None:
        c, h = table["core, compiled"], table["HF Trainer (eager)"]
        print(f"compiled core vs HF Trainer: {c[0] / h[0]:.2f}x wall, {c[1] / h[1]:.2f}x CPU")
    print("(CPU-time rates count only this process's CPU seconds: steadier than wall time on a shared machine)")
    print(f"\ncompile: first compiled step {first_step:.1f}s including setup; the core's compile event: "
          f"{compiled.reporter.compile_seconds or float('nan'):.1f}s; steady-state step "
          f"{statistics.median(t[0] for t in compiled_times[w:]) * 1e3:.1f} ms (cache: {args.cache_dir})")
    quiet_rate, noisy_rate = rates(quiet_times, w, batch), rates(noisy_times, w, batch)
    noisy_step = batch / noisy_rate[0]
    inside = in_log["seconds"] / len(noisy_times)
    print(f"reporting overhead (compiled core, metrics every step to an in-memory recording reporter vs a no-op "
          f"reporter logging every 1000 steps): {(quiet_rate[0] / noisy_rate[0] - 1) * 100:+.1f}% wall, "
          f"{(quiet_rate[1] / noisy_rate[1] - 1) * 100:+.1f}% CPU per step; time inside the logging path "
          f"{inside * 1e3:.3f} ms/step = {inside / noisy_step * 100:.2f}% of a step; "
          f"{len(recording.records)} metric records kept")


if __name__ == "__main__":
    main()
