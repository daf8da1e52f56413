"""A small training entry point built only from worker.training.distributed, for the DDP tests.

It follows the recipe's DDP contract (distributed.py's docstring): global batch split by RankSampler, DDP
around the model, train loss averaged over ranks, rank-0 reporting, should_stop agreed every step. Run in
one process (no launch) it is the single-process baseline.
"""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler

from worker.training import distributed
from worker.training.reporting import CheckpointInfo, ConfigError, TrainingResult

ROWS, FEATURES = 64, 5


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, 1, generator=g)).squeeze(1) + 0.1 * torch.randn(ROWS, generator=g)
    return x, y


def train(config, reporter) -> TrainingResult:  # noqa: ANN001
    hp = config.spec.hyperparameters
    if config.spec.name == "fail-on-purpose":
        raise ConfigError("hyperparameters.batch_size: refused on purpose", field="hyperparameters.batch_size")
    ctx = distributed.current()
    x, y = _data()
    torch.manual_seed(hp.seed)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    if ctx is not None:
        per = distributed.per_rank_batch_size(hp.batch_size, ctx)
        sampler = distributed.RankSampler(ROWS, ctx, seed=hp.seed)
        runner = distributed.wrap(model, ctx)
    else:
        per = hp.batch_size
        base = DistributedSampler(range(ROWS), num_replicas=1, rank=0, shuffle=True, seed=hp.seed)
        sampler = type("One", (), {"indices": lambda self, e: (base.set_epoch(e), list(iter(base)))[1]})()
        runner = model
    optimizer = torch.optim.SGD(model.parameters(), lr=hp.learning_rate, momentum=0.9)
    step = 0
    status = "succeeded"
    loss_value = float("nan")
    for epoch in range(hp.epochs):
        order = sampler.indices(epoch)
        for i in range(len(order) // per):
            if reporter.should_stop():
                status = "cancelled"
                break
            rows = torch.tensor(order[i * per:(i + 1) * per])
            loss = torch.nn.functional.mse_loss(runner(x[rows]).squeeze(1), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            metrics = {"train_loss": loss.item()}
            if ctx is not None:
                metrics = distributed.mean_over_ranks(metrics, ctx)
            loss_value = metrics["train_loss"]
            reporter.metrics(step, metrics)
            reporter.progress(step, hp.epochs * (ROWS // hp.batch_size), step / (ROWS // hp.batch_size))
        if status == "cancelled":
            break
    weights = torch.cat([p.detach().flatten() for p in distributed.unwrap(runner).parameters()]).tolist()
    reporter.event("info", "weights", "final weights", {"weights": weights, "rank_world": getattr(ctx, "world_size", 1)})
    if ctx is None or ctx.is_main:
        folder = config.output_dir / "checkpoints" / f"step-{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights.txt").write_text(repr(weights))
        reporter.checkpoint_saved(CheckpointInfo(name=folder.name, path=folder, step=step, epoch=step / 4,
                                                 metrics={"train_loss": loss_value}, size_bytes=1, sha256="0" * 64,
                                                 is_final=True))
    return TrainingResult(status=status, steps=step, epochs=step / (ROWS // hp.batch_size),
                          metrics={"train_loss": loss_value}, final_checkpoint=f"step-{step:08d}")
