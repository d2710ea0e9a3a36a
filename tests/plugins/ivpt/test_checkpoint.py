"""IVPT checkpoints with missing or garbled metadata are refused in one sentence, never an internal error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from xaikit.errors import XaikitError
from xaikit_ivpt.checkpoint import FORMAT, Checkpoint, load_checkpoint, save_checkpoint

GOOD = {"epoch": 0, "classes": ["a", "b"], "architecture": {"prototypes": [4, 3]}, "backbone": {"name": "demo-vit", "options": {}}}


def test_a_well_formed_checkpoint_round_trips(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", Checkpoint(model={"w": torch.ones(2)}, metadata=GOOD))
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    assert loaded.metadata == GOOD and torch.equal(loaded.model["w"], torch.ones(2))


@pytest.mark.parametrize(
    "header",
    [
        {"format": FORMAT},
        {"format": FORMAT, "metadata": "{not json"},
        {"format": FORMAT, "metadata": "[]"},
        {"format": FORMAT, "metadata": json.dumps({**GOOD, "epoch": "zero"})},
        {"format": FORMAT, "metadata": json.dumps({**GOOD, "classes": "ab"})},
        {"format": FORMAT, "metadata": json.dumps({key: value for key, value in GOOD.items() if key != "architecture"})},
        {"format": FORMAT, "metadata": json.dumps({**GOOD, "backbone": 3})},
        {"format": FORMAT, "metadata": json.dumps(GOOD), "optimizer": "{"},
    ],
)
def test_missing_or_garbled_metadata_is_one_sentence(tmp_path, header):
    save_file({"model.w": torch.ones(2)}, str(tmp_path / "c.safetensors"), metadata=header)
    with pytest.raises(XaikitError, match="missing or garbled metadata"):
        load_checkpoint(tmp_path / "c.safetensors")


def test_a_garbled_optimizer_key_is_one_sentence(tmp_path):
    header = {"format": FORMAT, "metadata": json.dumps(GOOD), "optimizer": "[]"}
    save_file({"model.w": torch.ones(2), "optimizer.x.exp_avg": torch.ones(2)}, str(tmp_path / "c.safetensors"), metadata=header)
    with pytest.raises(XaikitError, match="missing or garbled metadata"):
        load_checkpoint(tmp_path / "c.safetensors")
