import torch
from training_helpers import make_spec

from worker.training.precision import resolve_precision


def test_auto_is_fp32_on_cpu_and_fp16_falls_back_there():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32"
    fp16 = resolve_precision("fp16", cpu)
    assert fp16.name == "fp32" and "CUDA" in fp16.warning and fp16.grad_scaler() is None


def test_bf16_autocast_trains_on_cpu_with_fp32_weights(run, tmp_path):
    result, rep = run(make_spec(hyperparameters={"max_steps": 6, "precision": "bf16"}))
    (device,) = rep.of_type("device")
    assert device[3] == {"device": "cpu", "precision": "bf16", "requested_precision": "bf16"}
    assert result.status == "succeeded" and all(torch.isfinite(torch.tensor(rep.values("train_loss"))))
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "out" / "checkpoints" / result.final_checkpoint / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_fp16_request_on_cpu_warns_and_runs_fp32(run):
    result, rep = run(make_spec(hyperparameters={"max_steps": 2, "precision": "fp16"}))
    assert result.status == "succeeded"
    assert rep.of_type("precision")[0][0] == "warning"
    assert rep.of_type("device")[0][3]["precision"] == "fp32"
