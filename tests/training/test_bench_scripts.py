"""The benchmark scripts' CPU-safe paths (the GPU check itself needs CUDA and is not run here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}


def test_gpu_check_dry_run_trains_the_tiny_config_on_cpu():
    out = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--no-compile", "--steps", "8"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "eager:" in out.stdout and "tokens/s" in out.stdout and "MFU" in out.stdout
    assert "succeeded" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_check_without_cuda_says_so():
    out = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert "no CUDA device" in out.stderr and "--dry-run" in out.stderr
