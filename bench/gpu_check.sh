#!/usr/bin/env bash
# GPU check of the training core: a GPT-2-small-sized builtin transformer (~124M parameters) trained
# through worker.training with bf16 and torch.compile; prints tokens/s, compiled/eager and MFU.
#   bash bench/gpu_check.sh            # needs a CUDA device
#   bash bench/gpu_check.sh --dry-run  # tiny config on the CPU: checks the code path anywhere
# Other arguments go to bench/gpu_check.py (--steps, --batch-size, --peak-tflops, --cache-dir ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [[ -x .venv/bin/python && "$PYTHON" == python ]]; then PYTHON=.venv/bin/python; fi

dry_run=false
for arg in "$@"; do [[ "$arg" == "--dry-run" ]] && dry_run=true; done
if ! $dry_run && ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device is visible to torch on this machine; nothing to measure." >&2
  echo "gpu_check: run 'bash bench/gpu_check.sh --dry-run' for the CPU smoke run of the same code." >&2
  exit 2
fi
exec "$PYTHON" bench/gpu_check.py "$@"
