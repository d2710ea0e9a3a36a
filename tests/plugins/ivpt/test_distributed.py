"""Data-parallel IVPT training: ``torchrun`` with 2 CPU processes (gloo) matches one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from xaikit.cli import main
from xaikit_ivpt.checkpoint import load_checkpoint

# Gumbel noise is drawn per process and presence takes its maximum over each process's share (as in
# the reference code), so the comparison uses the noiseless grouping and leaves presence out; every
# other term is a mean, which data parallelism reproduces exactly.
RECIPE = [
    "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--option", "prototypes=[5,4,3]",
    "--option", "train_grouping=softmax", "--option", "presence_weight=0", "--option", "augment=reference",
]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_two_processes_match_one_on_the_same_global_batch(tiny_birds, tmp_path):
    arguments = ["train", "--data-root", str(tiny_birds), *RECIPE]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "xaikit", *arguments, "--out", str(tmp_path / "ddp")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("top-1") == 1, "only rank 0 reports"
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["processes"] == 2

    assert main([*arguments, "--out", str(tmp_path / "single")]) == 0
    ddp, single = load_checkpoint(tmp_path / "ddp"), load_checkpoint(tmp_path / "single")
    assert ddp.model.keys() == single.model.keys()
    # Gradients are summed in another order across processes; Adam divides by sqrt(v), which turns that
    # float noise on near-zero gradients (the spatial bias maps, about 1e-3 in size) into ~1e-5 steps.
    for key in single.model:
        torch.testing.assert_close(ddp.model[key], single.model[key], rtol=1e-4, atol=5e-5, msg=key)
    for left, right in zip(ddp.metadata["history"], single.metadata["history"], strict=True):
        assert left.keys() == right.keys()
        for name in left:
            assert left[name] == pytest.approx(right[name], rel=1e-4, abs=1e-6), name
