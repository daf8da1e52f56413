"""bench/service_overhead.py runs end to end (its figures are read by people, not asserted: machines are noisy)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_service_overhead_bench_runs_both_paths_and_prints_its_figures(postgres_admin_url: str,
                                                                         redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")}
    env.update(TEST_PG_ADMIN_URL=postgres_admin_url, BENCH_REDIS_URL=redis_url)
    out = subprocess.run([sys.executable, "bench/service_overhead.py", "--quick", "--rounds", "1",
                          "--latency-jobs", "3", "--timeline"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    # the same job both ways: the direct run trained every step; the service job succeeded
    steps = re.findall(r"^direct: .*\((\d+) steps", text, re.M)
    assert steps[-1] == "88", text  # 2 epochs of digits' 1437 training rows in batches of 32
    assert re.search(r"^service: +\d+\.\d+ s", text, re.M), text
    assert re.search(r"^ +\d+\.\d+ s +succeeded +succeeded after 88 steps", text, re.M), text
    ratio = float(re.search(r"^overhead ratio: (\S+)", text, re.M).group(1))
    assert math.isfinite(ratio) and ratio > 0
    assert re.search(r"machine CPU-seconds, service / direct: median \d+\.\d+", text), text
    latency = re.search(r"^submit-to-running: median (\S+) ms, .* over 3 jobs \(redis", text, re.M)
    assert latency and float(latency.group(1)) > 0, text
