"""benchmarks/ivpt_overhead.py: its deep-VPT baseline on the real demo-vit, and one tiny run of the whole benchmark."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from xaikit.testing import demo_backbone

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ivpt_overhead.py"


def _load():
    """The benchmark script, loaded by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("ivpt_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load()


@pytest.fixture(scope="module")
def backbone():
    return demo_backbone()


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))


def test_deep_vpt_gives_one_score_per_class_and_trains_only_prompts_and_head(backbone, pixels):
    torch.manual_seed(0)
    model = bench.DeepVPT(backbone.model, num_classes=7, num_prompts=4)
    assert tuple(model.prompts.shape) == (6, 4, 128)  # one set per block of demo-vit
    assert {name for name, _ in model.named_parameters()} == {"prompts", "head.weight", "head.bias"}
    scores = model(pixels)
    assert tuple(scores.shape) == (3, 7)
    torch.nn.functional.cross_entropy(scores, torch.tensor([0, 3, 6])).backward()
    assert all(bool(block.abs().sum() > 0) for block in model.prompts.grad), "every block's prompts get a gradient"
    assert model.head.weight.grad is not None and bool(model.head.weight.grad.abs().sum() > 0)
    assert all(parameter.grad is None for parameter in backbone.model.parameters())


def test_every_block_sees_prefix_then_prompts_then_patches(backbone, pixels):
    model = bench.DeepVPT(backbone.model, num_classes=7, num_prompts=4)
    seen = []
    hooks = [block.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].detach())) for block in backbone.model.blocks]
    try:
        with torch.no_grad():
            model(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    assert [tuple(tokens.shape) for tokens in seen] == [(3, 1 + 4 + 14 * 14, 128)] * 6
    for tokens, prompts in zip(seen, model.prompts, strict=True):  # the block's own prompts, right after CLS
        torch.testing.assert_close(tokens[:, 1:5], prompts.expand(3, -1, -1))


def test_a_tiny_run_times_every_method(tmp_path, capsys):
    out = tmp_path / "ivpt_overhead.json"
    report = bench.main(["--steps", "1", "--rounds", "1", "--warmup", "1", "--batch-size", "2", "--device", "cpu", "--out-json", str(out)])
    printed = capsys.readouterr().out
    assert set(report["train"]) == {"deep VPT", "ivpt (CE only)", "ivpt (all losses)"}
    assert set(report["inference"]) == {"deep VPT", "ivpt"}
    for figures in [*report["train"].values(), *report["inference"].values()]:
        assert math.isfinite(figures["ms_per_step"]) and figures["ms_per_step"] > 0
        assert math.isfinite(figures["overhead"])
    assert report["train"]["deep VPT"]["overhead"] == 0
    for name in ("deep VPT", "ivpt (CE only)", "ivpt (all losses)", "paper +4.8 %", "paper +5.2 %"):
        assert name in printed
    assert json.loads(out.read_text())["train"] == report["train"]
    assert report["trainable_parameters"]["deep VPT"] == 6 * 4 * 128 + 128 * 200 + 200
    assert report["blocks_run"]["deep VPT"] == 6
