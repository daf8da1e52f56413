import math

import pytest
import torch
from torch import nn
from training_helpers import make_spec

from worker.training.optim import LrSchedule, build_optimizer, param_groups
from worker.training.reporting import ConfigError
from worker.training.spec import Hyperparameters, RegularizationSpec

OPTIMIZERS = [
    ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("sgd", {}),
    ("adam", {"betas": [0.8, 0.99], "amsgrad": True}),
    ("adamw", {"eps": 1e-6}),
    ("rmsprop", {"alpha": 0.9, "momentum": 0.5, "centered": True}),
]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))


@pytest.mark.parametrize("name,args", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)])
def test_each_optimizer_builds_and_steps(name, args):
    model = tiny_model()
    hp = Hyperparameters(optimizer=name, optimizer_args=args, learning_rate=0.05)
    opt = build_optimizer(model, hp, RegularizationSpec(weight_decay=0.01), torch.device("cpu"))
    assert type(opt).__name__.lower() == name
    for key, value in args.items():
        assert opt.defaults[key] == (tuple(value) if isinstance(value, list) else value)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_no_weight_decay_on_biases_and_norms_and_only_trainable_parameters():
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    groups = param_groups(model.parameters(), 0.1)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([2, 8])]
    assert all(p.dim() == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4
    assert all(p is not model[0].weight for g in groups for p in g["params"])


def test_fused_kernels_used_where_available():
    opt = build_optimizer(tiny_model(), Hyperparameters(optimizer="adamw"), RegularizationSpec(), torch.device("cpu"))
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")


def test_torch_rejection_is_a_config_error_naming_the_field():
    # the spec refuses negative values; a spec built without validation stands in for one torch rejects
    hp = Hyperparameters.model_construct(**{**Hyperparameters().model_dump(), "optimizer": "sgd",
                                            "optimizer_args": {"momentum": -1.0}})
    with pytest.raises(ConfigError) as e:
        build_optimizer(tiny_model(), hp, RegularizationSpec(), torch.device("cpu"))
    assert e.value.field == "hyperparameters.optimizer_args" and "momentum" in str(e.value)


def expected_lr(name, step, peak, warmup, total):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / (total - warmup)
    return {"constant": peak, "linear": peak * (1 - progress),
            "cosine": peak * 0.5 * (1 + math.cos(math.pi * progress))}[name]


@pytest.mark.parametrize("name", ["constant", "linear", "cosine"])
def test_lr_schedule_matches_formula(name):
    schedule = LrSchedule(name, 0.1, warmup_steps=5, total_steps=25)
    for step in range(25):
        assert schedule(step) == pytest.approx(expected_lr(name, step, 0.1, 5, 25), abs=1e-12)
    assert schedule(4) == pytest.approx(0.1)  # warmup reaches the peak


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_lr_is_reported_per_step_and_follows_the_schedule(run, name):
    spec = make_spec(hyperparameters={"max_steps": 12, "warmup_steps": 3, "scheduler": name, "learning_rate": 0.02})
    _, rep = run(spec)
    series = rep.series("lr")
    assert [s for s, _ in series] == list(range(1, 13))
    for step, lr in series:
        assert lr == pytest.approx(expected_lr(name, step - 1, 0.02, 3, 12), abs=1e-12)
