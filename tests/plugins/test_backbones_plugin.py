"""The built-in backbones plugin: demo-vit built by name from its committed weights."""

from __future__ import annotations

import torch

import xaikit
from xaikit.features.extract import extract_features


def test_demo_vit_loads_by_name_with_its_own_preprocessing():
    backbone = xaikit.create("backbone", "demo-vit", device="cpu", layers=[-1])
    assert backbone.name == "demo-vit" and backbone.num_prefix_tokens == 1
    assert backbone.preprocessing.size == (112, 112) and backbone.patch_size == 8 and backbone.embed_dim == 128
    features = backbone.features(torch.zeros(2, 3, 112, 112))
    assert features.cls.shape == (2, 128) and features.patches.shape == (2, 14, 14, 128)
    assert features.layers[5].shape == (2, 14, 14, 128)
    assert xaikit.create("backbone", "demo-vit", device="cpu").fingerprint == backbone.fingerprint


def test_demo_vit_cls_features_separate_unseen_synthetic_birds(tmp_path):
    """1-NN on CLS features of species the model never saw: another seed makes other species.

    The features must transfer: observed 0.40-0.43 for seeds 123 and 7; chance is 0.10.
    """
    birds = xaikit.create("dataset", "synthetic-birds", root=tmp_path / "birds", classes=10, per_class=8, size=112, seed=123)
    backbone = xaikit.create("backbone", "demo-vit", device="cpu")
    train, test = birds.split("train"), birds.split("test")
    reference = torch.nn.functional.normalize(extract_features(backbone, train, cache=False).cls, dim=1)
    queries = torch.nn.functional.normalize(extract_features(backbone, test, cache=False).cls, dim=1)
    nearest = (queries @ reference.T).argmax(dim=1)
    accuracy = (torch.as_tensor(train.labels)[nearest] == torch.as_tensor(test.labels)).float().mean().item()
    assert accuracy >= 0.25, f"1-NN accuracy on CLS features of unseen species is {accuracy:.2f} (chance 0.10)"
