"""The training recipe: validate and set up (model, freeze, compile, optimizer, data), train, save.

Read it top to bottom like nanoGPT's train.py. One "step" is one optimizer step over
`gradient_accumulation_steps` micro-batches; epochs are `steps_per_epoch` steps. Everything that can
be wrong with the config is found in `setup`, before the first step runs.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from . import checkpoint as ckpt
from . import distributed
from .batches import TrainBatches
from .compile import CompiledModel, compile_settings
from .config import RunConfig
from .data import DataInfo, num_rows, prepare_data
from .freezing import FreezePlan, apply_freeze, plan_freeze, trainable_summary, unfreeze
from .models import (block_size, build_model, checkpoint_exporter, describe_model, input_kind, load_base_weights,
                     model_tokenizer, resolve_description)
from .models.transfer import read_base_config
from .optim import LrSchedule, add_parameters, build_optimizer, decayed_parameters
from .precision import resolve_device, resolve_precision
from .regularization import override_dropout, penalties
from .reporting import CheckpointInfo, ConfigError, Reporter, TrainingError, TrainingResult
from .spec import FromJobModel
from .tasks import data_loss, evaluate, model_output, split_batch


# the parts of the spec that decide the training trajectory; a resumed run must have the same ones
RESUME_MUST_MATCH = ("task", "model", "data", "hyperparameters", "freeze", "regularization", "lora")


def run_training(config: RunConfig, reporter: Reporter) -> TrainingResult:
    with compile_settings(config.compile_cache_dir):
        recipe = Recipe(config, reporter)
        recipe.setup()
        return recipe.train()


class Recipe:
    def __init__(self, config: RunConfig, reporter: Reporter) -> None:
        self.config, self.reporter = config, reporter
        self.spec = config.spec
        self.hp, self.reg = self.spec.hyperparameters, self.spec.regularization
        self.step = 0
        self.best_val_loss: float | None = None
        self.best_checkpoint: str | None = None
        self.evals_without_improvement = 0
        self.stopped_early = False
        self.unfrozen = False
        self.last_saved: str | None = None
        self.train_metrics: dict[str, float] = {}
        self.val_metrics: dict[str, float] = {}

    # --- setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        spec, hp, reg, cfg = self.spec, self.hp, self.reg, self.config
        self.ddp = distributed.current()  # set when launched by worker/ddp_launch.py (resources.gpus > 1)
        self.device = self.ddp.device if self.ddp else resolve_device(cfg.device)
        self.precision = resolve_precision(hp.precision, self.device)

        # model description first: it decides the input kind, the tokenizer and the context length
        base = None
        if isinstance(spec.model, FromJobModel):
            if cfg.base_checkpoint is None:
                raise ConfigError("model.from_job: the worker did not provide the base checkpoint",
                                  field="model.from_job")
            base = read_base_config(cfg.base_checkpoint)
        description = describe_model(spec, base, allow_hub_downloads=cfg.allow_hub_downloads)
        base_info = DataInfo.from_config(base, cfg.base_checkpoint) if base else None
        data = prepare_data(
            spec, cfg.datasets, input_kind(description), block_size=block_size(description),
            tokenizer=base_info.tokenizer if base_info else model_tokenizer(description, cfg.allow_hub_downloads),
            features=base_info.features if base_info else None,
        )
        self.info = data.info
        self.description = resolve_description(description, data.info)
        if reg.dropout is not None:
            self.description["config"] = {**self.description["config"], "dropout": reg.dropout}
        if hp.early_stopping_patience and data.val is None:
            raise ConfigError("hyperparameters.early_stopping_patience: needs validation data "
                              "(data.validation or data.validation_split > 0)",
                              field="hyperparameters.early_stopping_patience")

        if self.ddp:
            distributed.per_rank_batch_size(min(hp.batch_size, num_rows(data.train)), self.ddp)  # divisible?
            if spec.freeze.unfreeze_after_epochs is not None:  # DDP syncs only what trains when it wraps
                raise ConfigError("freeze.unfreeze_after_epochs is not supported with resources.gpus > 1",
                                  field="freeze.unfreeze_after_epochs")
        self.batches = TrainBatches(data.train, hp.batch_size, hp.seed, self.device,
                                    shard=(self.ddp.rank, self.ddp.world_size) if self.ddp else None)
        self.val = {k: v.to(self.device) for k, v in data.val.items()} if data.val else None
        self.steps_per_epoch = len(self.batches) // hp.gradient_accumulation_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(f"hyperparameters.gradient_accumulation_steps: {hp.gradient_accumulation_steps} "
                              f"is more than the {len(self.batches)} batches of an epoch",
                              field="hyperparameters.gradient_accumulation_steps")
        self.total_steps = hp.max_steps or hp.epochs * self.steps_per_epoch
        self.schedule = LrSchedule(hp.scheduler, hp.learning_rate, hp.warmup_steps, self.total_steps)

        # model: build (seeded), transfer weights, dropout, freeze -- then optimizer, then compile
        torch.manual_seed(hp.seed)
        model = build_model(self.description, data.info, base_checkpoint=cfg.base_checkpoint if base else None,
                            allow_hub_downloads=cfg.allow_hub_downloads)
        transfer = load_base_weights(model, self.description, cfg.base_checkpoint) if base else None
        if reg.dropout is not None:
            override_dropout(model, reg.dropout)
        if spec.lora is not None:  # adapters after the weights are final, before freezing (lora.py)
            from .lora import apply_lora

            model = apply_lora(model, spec.lora, self.description)
        self.freeze: FreezePlan = plan_freeze(model, spec.freeze)
        apply_freeze(model, self.freeze)
        self.model = model.to(self.device)
        self.exporter = checkpoint_exporter(self.model, self.description, data.info.tokenizer)  # hf/, adapter/
        self.optimizer = build_optimizer(self.model, hp, reg, self.device)
        self.scaler = self.precision.grad_scaler()

        resume_from = self._resume_point()
        self._report_setup(data, transfer)
        if resume_from is not None:
            self._restore(resume_from)
        self._refresh_trainable()
        # after freezing (and any unfreezing a resume restored): the graph knows what trains
        # DDP wraps the frozen model (rank 0's weights to all, gradients averaged); compile wraps DDP
        self.runner = CompiledModel(distributed.wrap(self.model, self.ddp) if self.ddp else self.model,
                                    hp.compile, hp.compile_mode)
        if hp.compile and not self.runner.is_compiled:
            self._warn_compile(self.runner.error or "torch.compile is unavailable")

    def _resume_point(self) -> Any:
        removed = ckpt.remove_partial(self.config.output_dir)
        if removed:
            self.reporter.event("info", "partial_checkpoints_removed",
                                f"removed {len(removed)} incomplete checkpoint directories", {"names": removed})
        if self.config.resume:
            latest = ckpt.latest_resumable(self.config.output_dir)
            if latest is not None:
                self._check_same_job(ckpt.read_config(latest).get("spec") or {})
            return latest
        stale = [p.name for _, p in ckpt.list_checkpoints(self.config.output_dir)]
        for name in stale:  # a fresh start: checkpoints of an earlier attempt would confuse pruning
            ckpt.remove_checkpoint(self.config.output_dir, name)
        return None

    def _check_same_job(self, saved: dict[str, Any]) -> None:
        """Resuming continues the same run: a checkpoint trained with other settings must not be mixed in."""
        current = self.spec.model_dump(mode="json")
        differ = [k for k in RESUME_MUST_MATCH if saved.get(k) != current.get(k)]
        if differ:
            raise ConfigError(f"output_dir holds checkpoints of a job with different {', '.join(differ)}; "
                              "resume only the same job (or start fresh with resume=False)", field=differ[0])

    def _report_setup(self, data: Any, transfer: dict[str, Any] | None) -> None:
        r, p = self.reporter, self.precision
        r.event("info", "started", f"training for {self.total_steps} steps", {
            "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
            "train_examples": num_rows(data.train), "val_examples": num_rows(data.val) if data.val else 0,
            "batch_size": self.batches.batch_size, "model": self.description,
        })
        r.event("info", "device", f"running on {self.device} in {p.name}",
                {"device": str(self.device), "precision": p.name, "requested_precision": self.hp.precision})
        if p.warning:
            r.event("warning", "precision", p.warning, {"precision": p.name})
        if transfer is not None:
            r.event("info", "base_model_loaded",
                    f"loaded {transfer['loaded']} tensors from the base checkpoint; "
                    f"{len(transfer['reinitialized'])} newly initialized", transfer)
        summary = trainable_summary(self.model)
        r.event("info", "trainable_parameters",
                f"{summary['trainable']:,} of {summary['total']:,} parameters train", summary)

    def _restore(self, path: Any) -> None:
        ckpt.load_weights(self.model, path)
        state = ckpt.load_training_state(path)
        if state["unfrozen"]:
            self._unfreeze(report=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.step = int(state["step"])
        self.best_val_loss = state["best_val_loss"]
        self.best_checkpoint = state["best_checkpoint"]
        self.evals_without_improvement = int(state["evals_without_improvement"])
        self.stopped_early = bool(state["stopped_early"])
        self.last_saved = path.name
        self.reporter.event("info", "resumed", f"resumed from step {self.step} ({path.name})",
                            {"step": self.step, "checkpoint": path.name, "epoch": self.epoch})

    # --- train ------------------------------------------------------------------------------------

    @property
    def epoch(self) -> float:
        return self.step / self.steps_per_epoch

    def train(self) -> TrainingResult:
        """Run steps until the end, early stopping or should_stop(). After a should_stop() pause the state
        is intact in memory: calling train() again continues at the same step (bench/train_throughput.py
        runs the core in slices this way)."""
        hp, r = self.hp, self.reporter
        self._reset_window()
        status = "early_stopped" if self.stopped_early else "succeeded"
        while self.step < self.total_steps and not self.stopped_early:
            if r.should_stop():
                status = "cancelled"
                break
            epoch, index = divmod(self.step, self.steps_per_epoch)
            if index == 0 and not self.unfrozen and self.freeze.due(epoch):
                self._unfreeze(report=True)
            lr = self.schedule.apply(self.optimizer, self.step)
            self._run_step(epoch, index)
            self.step += 1

            if self.step % hp.log_every_steps == 0 or self.step == self.total_steps:
                self._log(lr)
            r.progress(self.step, self.total_steps, self.epoch)
            end_of_epoch = self.step % self.steps_per_epoch == 0
            improved = False
            if self.val is not None and (end_of_epoch or self.step == self.total_steps or (
                    hp.eval_every_steps and self.step % hp.eval_every_steps == 0)):
                improved = self._evaluate()
            done = self.step == self.total_steps or self.stopped_early
            if done or improved or (hp.checkpoint_every_steps and self.step % hp.checkpoint_every_steps == 0):
                self._save(is_best=improved, is_final=done)
        if status == "cancelled":
            r.event("info", "cancelled", f"cancelled at step {self.step}", {"step": self.step})
            return self._result(status, final=None)
        if self.stopped_early:
            status = "early_stopped"
        self._check_finite()
        final = self.last_saved  # the last step saves itself as final; a resumed finished run has it already
        if final != ckpt.checkpoint_name(self.step):
            final = self._save(is_best=False, is_final=True)
        r.event("info", "finished", f"{status} after {self.step} steps",
                {"status": status, "step": self.step, **self.train_metrics, **self.val_metrics})
        return self._result(status, final=final)

    def _run_step(self, epoch: int, index: int) -> None:
        """One optimizer step; a failing compiled step is re-run eagerly after falling back."""
        if not self.runner.is_compiled:
            return self._train_step(epoch, index)
        rng = torch.get_rng_state()
        try:
            with self.runner.timing_first_call():
                self._train_step(epoch, index)
        except Exception as e:  # compile errors surface here, at the first forward/backward
            self._warn_compile(self.runner.fall_back(e))
            self.optimizer.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)
            return self._train_step(epoch, index)
        if self.runner.first_call_seconds is not None and not getattr(self, "_compile_reported", False):
            self._compile_reported = True
            self.reporter.event("info", "compile", f"compiled in {self.runner.first_call_seconds:.1f}s",
                                {"seconds": self.runner.first_call_seconds, "mode": self.hp.compile_mode or "default"})

    def _train_step(self, epoch: int, index: int) -> None:
        hp, accum = self.hp, self.hp.gradient_accumulation_steps
        model = self.runner.model
        loss_sum = torch.zeros((), device=self.device)
        step_penalties: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            inputs, labels = split_batch(self.batches.batch(epoch, index * accum + micro))
            with self.precision.autocast():
                logits = model_output(model(**inputs))
            loss = data_loss(self.spec.task, logits, labels, self.reg.label_smoothing)
            total = loss / accum
            if micro == 0:  # the penalties depend on the weights only: add them once per step
                step_penalties = penalties(self.penalized, self.reg)
                total = total + sum(step_penalties.values())
            (self.scaler.scale(total) if self.scaler else total).backward()
            loss_sum += loss.detach()
        self._track("train_loss", loss_sum / accum)
        for name, value in step_penalties.items():
            self._track(name, value.detach())
        if self.reg.max_grad_norm is not None:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.reg.max_grad_norm, foreach=True)
            self._track("grad_norm", norm.detach())
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # --- metrics: summed on the device, synced only when logged -------------------------------------

    def _reset_window(self) -> None:
        self.window: dict[str, torch.Tensor] = {}
        self.window_steps = 0
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)

    def _track(self, name: str, value: torch.Tensor) -> None:
        if name == "train_loss":
            self.window_steps += 1
            bad = ~torch.isfinite(value) & (self.first_bad_step < 0)
            self.first_bad_step = torch.where(bad, self.step + 1, self.first_bad_step)
        self.window[name] = self.window[name] + value if name in self.window else value.float()

    def _check_finite(self) -> None:
        bad = int(self.first_bad_step)
        if bad >= 0:
            raise TrainingError(f"the loss became NaN or infinite at step {bad}; lower the learning rate, "
                                "clip gradients (regularization.max_grad_norm) or check the data",
                                type="nonfinite_loss")

    def _log(self, lr: float) -> None:
        names = list(self.window)
        values = torch.stack([self.window[n] for n in names]).tolist() if names else []  # one sync
        self._check_finite()
        metrics = {n: v / max(self.window_steps, 1) for n, v in zip(names, values)}
        if self.ddp:  # each rank saw its part of the batch: the mean over ranks is the batch's
            metrics = distributed.mean_over_ranks(metrics, self.ddp)
        metrics["lr"] = lr
        self.train_metrics = {k: v for k, v in metrics.items() if k == "train_loss"}
        self.reporter.metrics(self.step, metrics)
        self.window, self.window_steps = {}, 0

    # --- evaluation, early stopping, checkpoints ----------------------------------------------------

    def _evaluate(self) -> bool:
        """Validation metrics; returns whether the validation loss improved on the best so far."""
        self._check_finite()
        self.model.eval()
        try:
            metrics = self._eval_with(self.runner.model)
        except Exception as e:
            if not self.runner.is_compiled:
                raise
            self._warn_compile(self.runner.fall_back(e))
            metrics = self._eval_with(self.runner.model)
        finally:
            self.model.train()
        self.val_metrics = metrics
        self.reporter.metrics(self.step, metrics)
        self.reporter.event("info", "evaluation", f"step {self.step}: val_loss {metrics['val_loss']:.4f}",
                            {"step": self.step, "epoch": self.epoch, **metrics})
        loss = metrics["val_loss"]
        if not math.isfinite(loss):
            raise TrainingError(f"the validation loss became {loss} at step {self.step}", type="nonfinite_loss")
        if self.best_val_loss is None or loss < self.best_val_loss:
            self.best_val_loss, self.evals_without_improvement = loss, 0
            return True
        self.evals_without_improvement += 1
        patience = self.hp.early_stopping_patience
        if patience and self.evals_without_improvement >= patience:
            self.stopped_early = True
            self.reporter.event("info", "early_stop",
                                f"validation loss has not improved for {patience} evaluations; stopping",
                                {"step": self.step, "best_val_loss": self.best_val_loss, "patience": patience})
        return False

    def _eval_with(self, model: torch.nn.Module) -> dict[str, float]:
        def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
            with self.precision.autocast():
                return model_output(model(**inputs))

        return evaluate(forward, self.val, self.info, self.batches.batch_size)  # type: ignore[arg-type]

    def _save(self, is_best: bool, is_final: bool = False) -> str:
        self._check_finite()
        if is_best:
            self.best_checkpoint = ckpt.checkpoint_name(self.step)
        if self.ddp and not self.ddp.is_main:  # rank 0 writes; the others keep the same bookkeeping
            self.last_saved = ckpt.checkpoint_name(self.step)
            return self.last_saved
        metrics = {**self.train_metrics, **self.val_metrics}
        written = ckpt.save_checkpoint(self.config.output_dir, self.step, self.model,
                                       self._checkpoint_config(metrics), self._training_state(), extra=self.exporter)
        self.last_saved = written.name
        info = CheckpointInfo(name=written.name, path=written.path, step=self.step, epoch=self.epoch,
                              metrics=metrics, size_bytes=written.size_bytes, sha256=written.sha256,
                              is_best=is_best, is_final=is_final)
        self.reporter.checkpoint_saved(info)
        self.reporter.event("info", "checkpoint_saved", f"saved {written.name}",
                            {"name": written.name, "step": self.step, "is_best": is_best, "is_final": is_final})
        protected = {self.best_checkpoint} if self.best_checkpoint else set()
        for name in ckpt.to_prune(self.config.output_dir, self.hp.keep_checkpoints, protected):
            ckpt.remove_checkpoint(self.config.output_dir, name)
            self.reporter.checkpoint_removed(name)
        return written.name

    def _checkpoint_config(self, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "model": self.description,
            **self.info.to_config(),
            "step": self.step,
            "epoch": self.epoch,
            "metrics": metrics,
            "spec": self.spec.model_dump(mode="json"),
            "torch_version": torch.__version__,
        }

    def _training_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "best_val_loss": self.best_val_loss,
            "best_checkpoint": self.best_checkpoint,
            "evals_without_improvement": self.evals_without_improvement,
            "stopped_early": self.stopped_early,
            "unfrozen": self.unfrozen,
        }

    # --- helpers ------------------------------------------------------------------------------------

    def _unfreeze(self, report: bool) -> None:
        params = unfreeze(self.model, self.freeze)
        add_parameters(self.optimizer, params, self.reg.weight_decay)
        self.unfrozen = True
        self._refresh_trainable()
        if report:
            summary = trainable_summary(self.model)
            self.reporter.event("info", "unfrozen", f"unfroze {len(params)} parameter tensors at epoch "
                                f"{self.step // self.steps_per_epoch}", summary)

    def _refresh_trainable(self) -> None:
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.penalized = decayed_parameters(self.optimizer) if (self.reg.l1 or self.reg.l2) else []

    def _warn_compile(self, reason: str) -> None:
        self.reporter.event("warning", "compile_failed", f"torch.compile failed; running eagerly: {reason}",
                            {"reason": reason})

    def _result(self, status: str, final: str | None) -> TrainingResult:
        return TrainingResult(status=status, steps=self.step, epochs=self.epoch,  # type: ignore[arg-type]
                              metrics={**self.train_metrics, **self.val_metrics},
                              best_checkpoint=self.best_checkpoint, final_checkpoint=final)
