"""benchmarks/distributed_bench.py end to end on demo-vit: three kinds of run, the same records, a ratio for each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "distributed_bench.py"


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_the_benchmark_times_every_kind_and_checks_they_agree(tmp_path):
    out = tmp_path / "result.json"
    command = [sys.executable, str(SCRIPT), "--images", "6", "--batch-size", "2", "--backbone", "demo-vit", "--option", "image_size=112", "--out-json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures["wall_s"]) == {"one", "one_all_threads", "torchrun"} and all(value > 0 for value in figures["wall_s"].values())
    assert figures["torchrun_over_one"] == pytest.approx(figures["wall_s"]["torchrun"] / figures["wall_s"]["one"], rel=0.01)  # walls are rounded
    assert figures["explain_torchrun_over_one"] == pytest.approx(figures["phases_s"]["torchrun"]["explain_s"] / figures["phases_s"]["one"]["explain_s"], rel=0.01)
    assert figures["images"] == 6  # and the script exits non-zero when a kind writes other records
