"""The baseline explainers: a linear CLS probe explained by Grad-CAM and by captum's Integrated Gradients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import xaikit
from xaikit.errors import XaikitError
from xaikit.interfaces import Capability

pytest.importorskip("captum")

# The L-BFGS probe on demo-vit's CLS features classifies 15 of the 16 tiny test birds (4 species,
# chance 25 %); the threshold keeps a wide margin.
MIN_TEST_ACCURACY = 0.75
# Mean over the 16 tiny test birds of (share of the predicted class's map on the bird) / (share of the
# image the bird covers), on the patch grid: measured 1.27 for Grad-CAM and 1.78 for IG (8 steps).
MIN_GRADCAM_FOREGROUND = 1.1
MIN_IG_FOREGROUND = 1.4


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def birds(tiny_birds: Path):
    """The tiny dataset, cropped to the boxes (the factory's default): (train, test)."""
    dataset = xaikit.create("dataset", "synthetic-birds", root=tiny_birds)
    return dataset.split("train"), dataset.split("test")


@pytest.fixture(scope="module")
def demo_vit():
    return xaikit.create("backbone", "demo-vit", device="cpu")


@pytest.fixture(scope="module")
def gradcam(birds, demo_vit):
    return xaikit.create("explainer", "gradcam", backbone=demo_vit, cache=False).fit(birds[0])


@pytest.fixture(scope="module")
def ig(birds, demo_vit):
    return xaikit.create("explainer", "integrated-gradients", backbone=demo_vit, steps=8, cache=False).fit(birds[0])


@pytest.fixture(scope="module")
def toy_vit():
    """A 2-block random ViT at 32 px (2 x 2 patches): smooth, so integrated gradients converge in few steps."""
    torch.manual_seed(0)
    return xaikit.create(
        "backbone", "timm:vit_tiny_patch16_224", pretrained=False, image_size=32,
        model_args={"depth": 2, "embed_dim": 48, "num_heads": 2}, device="cpu",
    )


def images_of(samples, size: int) -> torch.Tensor:
    """RGB ``(B, 3, size, size)`` in [0, 1], each sample squashed as Huang et al.'s crops are."""
    pixels = [torch.from_numpy(sample.image).permute(2, 0, 1)[None].float() / 255 for sample in samples]
    return torch.cat([F.interpolate(p, size=(size, size), mode="bilinear", antialias=True) for p in pixels])


def foreground_ratio(maps: torch.Tensor, samples, grid: tuple[int, int]) -> float:
    """Mean over images of (share of the map's mass on the bird) / (share of the grid the bird covers)."""
    masks = torch.cat([F.interpolate(torch.from_numpy(s.foreground)[None, None].float(), size=grid, mode="area") for s in samples])[:, 0]
    share = (maps * masks).sum(dim=(1, 2)) / maps.sum(dim=(1, 2)).clamp_min(1e-12)
    return float((share / masks.mean(dim=(1, 2))).mean())


# ------------------------------------------------------------------------------------------ registry
def test_registered_under_their_names(demo_vit):
    infos = {info.name: info for info in xaikit.list_components("explainer")}
    assert infos["gradcam"].plugin == infos["integrated-gradients"].plugin == "xaikit-baselines"
    explainer = xaikit.create("explainer", "integrated-gradients", backbone=demo_vit)
    assert isinstance(explainer, xaikit.Explainer)
    assert explainer.capabilities == {Capability.PREDICTIONS, Capability.CONCEPT_MAPS, Capability.DIFFERENTIABLE}
    assert isinstance(xaikit.create("explainer", "gradcam", backbone=demo_vit), xaikit.Explainer)


# --------------------------------------------------------------------------------------------- probe
def test_probe_learns_synthetic_birds(gradcam, birds):
    test = birds[1]
    explanation = gradcam.explain([test[i] for i in range(len(test))])
    accuracy = float((explanation.predictions == torch.as_tensor(test.labels)).float().mean())
    assert accuracy >= MIN_TEST_ACCURACY
    assert gradcam.probe.train_accuracy == 1.0
    assert explanation.scores.shape == (len(test), 4)
    assert list(gradcam.concept_names) == list(test.classes)


def test_probe_fit_is_deterministic_and_separates_clusters():
    from xaikit_baselines.probe import fit_probe

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=generator) * 3
    labels = torch.arange(3).repeat_interleave(20)
    features = centres[labels] + torch.randn(60, 16, generator=generator)
    for normalize in (True, False):
        first = fit_probe(features, labels, 3, normalize=normalize, epochs=50)
        second = fit_probe(features, labels, 3, normalize=normalize, epochs=50)
        assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
        assert first.train_accuracy == 1.0
        assert torch.equal(first(features).argmax(dim=1), labels)


# ------------------------------------------------------------------------------------------ forward
def test_forward_is_differentiable_and_agrees_with_explain(ig, birds):
    samples = [birds[1][i] for i in range(4)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in samples[:1]])
    images.requires_grad_(True)
    logits = ig.forward(images)
    (gradient,) = torch.autograd.grad(logits[0].max(), images)
    assert gradient.shape == images.shape and gradient.abs().sum() > 0
    explanation = ig.explain(samples[:1])
    torch.testing.assert_close(logits.detach(), explanation.scores, rtol=1e-4, atol=1e-4)
    assert explanation.concept_maps is None  # integrated-gradients leaves maps out of explain by default
    detail = explanation.details[0]
    assert detail["prediction"] == int(explanation.predictions[0])
    assert detail["score"] == pytest.approx(float(explanation.scores[0].max()))
    json.dumps(explanation.details)


# ------------------------------------------------------------------------------------- concept maps
@pytest.mark.parametrize("name", ["gradcam", "ig"])
def test_concept_maps_shape_sign_determinism(name, request, birds):
    explainer = request.getfixturevalue(name)
    images = images_of([birds[1][i] for i in range(3)], 224)
    with torch.no_grad():  # as the Huang metrics call it
        maps = explainer.concept_maps(images)
    assert maps.shape == (3, 4, 14, 14) and maps.dtype == torch.float32
    assert (maps >= 0).all() and (maps.flatten(2).amax(dim=2) > 0).all()
    assert torch.equal(maps, explainer.concept_maps(images))
    torch.testing.assert_close(maps[1:2], explainer.concept_maps(images[1:2]), rtol=1e-4, atol=1e-6)  # batch-independent


def test_gradcam_explain_includes_every_class_map(gradcam, birds):
    samples = [birds[1][i] for i in range(2)]
    explanation = gradcam.explain(samples)
    assert explanation.concept_maps.shape == (2, 4, 14, 14)
    assert list(explanation.concept_names) == list(gradcam.classes)
    for row, sample in enumerate(samples):  # explain preprocesses the uint8 image exactly as concept_maps does its float copy
        image = torch.from_numpy(sample.image).permute(2, 0, 1)[None].float() / 255
        torch.testing.assert_close(explanation.concept_maps[row], gradcam.concept_maps(image)[0], rtol=1e-4, atol=1e-6)


def test_gradcam_matches_a_per_class_reference(toy_vit, birds):
    """All classes from one batched backward equal textbook Grad-CAM, one class at a time, on norm1 of the last block."""
    explainer = xaikit.create("explainer", "gradcam", backbone=toy_vit, cache=False).fit(birds[0])
    images = images_of([birds[1][i] for i in range(3)], 48).requires_grad_(True)
    maps = explainer.concept_maps(images)
    captured = []
    handle = toy_vit.model.blocks[-1].norm1.register_forward_hook(lambda module, args, output: captured.append(output))
    logits = explainer.forward(images)
    handle.remove()
    tokens = captured[0][:, 1:]  # drop CLS: (B, 4, D)
    for c in range(4):
        (gradient,) = torch.autograd.grad(logits[:, c].sum(), captured[0], retain_graph=True)
        weights = gradient[:, 1:].mean(dim=1)  # (B, D)
        expected = (tokens * weights[:, None]).sum(dim=-1).relu().reshape(3, 2, 2)
        torch.testing.assert_close(maps[:, c], expected.detach(), rtol=1e-4, atol=1e-6)


def test_gradcam_puts_more_mass_on_the_bird(gradcam, birds):
    samples = [birds[1][i] for i in range(len(birds[1]))]
    images = images_of(samples, 112)
    maps = gradcam.concept_maps(images)
    predicted = gradcam.forward(images).argmax(dim=1)
    chosen = maps[torch.arange(len(samples)), predicted]
    assert foreground_ratio(chosen, samples, (14, 14)) > MIN_GRADCAM_FOREGROUND


def test_integrated_gradients_puts_more_mass_on_the_bird(ig, birds):
    samples = [birds[1][i] for i in range(len(birds[1]))]
    images = images_of(samples, 112)
    attributions, _ = ig.attribute(images, ig.forward(images).argmax(dim=1))
    maps = F.adaptive_avg_pool2d(attributions.abs().sum(dim=1, keepdim=True), (14, 14))[:, 0]
    assert foreground_ratio(maps, samples, (14, 14)) > MIN_IG_FOREGROUND


def test_integrated_gradients_completeness_and_maps(toy_vit, birds):
    """captum's convergence delta is tiny on a smooth model, and the maps are the pooled |attributions|."""
    explainer = xaikit.create("explainer", "integrated-gradients", backbone=toy_vit, steps=16, cache=False).fit(birds[0])
    images = images_of([birds[1][i] for i in range(4)], 48)
    logits = explainer.forward(images).detach()
    target = logits.argmax(dim=1)
    attributions, delta = explainer.attribute(images, target)
    assert attributions.shape == (4, 3, 32, 32)
    baseline = explainer.forward(torch.zeros_like(images)).detach()  # the default black baseline
    difference = (logits - baseline).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), difference, rtol=0, atol=2e-3 * float(difference.abs().max()))
    assert float(delta.abs().max()) <= 2e-3 * float(difference.abs().max())
    maps = explainer.concept_maps(images)
    expected = F.adaptive_avg_pool2d(attributions.abs().sum(dim=1, keepdim=True), (2, 2))[:, 0]
    torch.testing.assert_close(maps[torch.arange(4), target], expected, rtol=1e-4, atol=1e-7)


def test_render_draws_the_predicted_class(gradcam, birds):
    sample = birds[1][0]
    detail = gradcam.explain([sample]).details[0]
    figure = gradcam.render(sample, detail)
    assert figure.dtype == np.uint8 and figure.shape == (224, 2 * 224 + 8, 3)


# ------------------------------------------------------------------------------------------ benchmark
@pytest.mark.parametrize("name, options", [("integrated-gradients", {"steps": 4}), ("gradcam", {})])
def test_bench_consistency_end_to_end(name, options, tiny_birds, tmp_path):
    config = xaikit.BenchConfig(
        explainer=name, metrics=["accuracy", "consistency"], data_root=str(tiny_birds), limit=8, device="cpu",
        options={"explainer": options},
    )
    result = xaikit.run_bench(config, tmp_path / "run")
    accuracy, consistency = result.metrics
    assert 0 <= consistency.value <= 100 and consistency.details["units"] == 4  # K = C: one map per class
    assert accuracy.value >= 100 * MIN_TEST_ACCURACY
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["consistency"]["value"] == consistency.value


def test_bench_class_agnostic_mode(tiny_birds, tmp_path):
    config = xaikit.BenchConfig(
        explainer="gradcam", metrics=["consistency"], data_root=str(tiny_birds), limit=8, device="cpu",
        options={"metric.consistency": {"mode": "class-agnostic"}},
    )
    (consistency,) = xaikit.run_bench(config, tmp_path / "run").metrics
    assert 0 <= consistency.value <= 100 and consistency.details["units"] == 16


def test_cli_bench_integrated_gradients_consistency(tiny_birds, tmp_path):
    from xaikit.cli import main

    code = main([
        "bench", "--explainer", "integrated-gradients", "--metric", "consistency", "--data-root", str(tiny_birds),
        "--limit", "8", "--device", "cpu", "--option", "steps=4", "--out", str(tmp_path / "run"),
    ])
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 <= summary["metrics"]["consistency"]["value"] <= 100


# ------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "name, options, message",
    [
        ("integrated-gradients", {"steps": 0}, "steps"),
        ("integrated-gradients", {"baseline": "white"}, "baseline"),
        ("integrated-gradients", {"method": "simpson"}, "integration method"),
        ("gradcam", {"block": 6}, "block 6 does not exist"),
        ("gradcam", {"block": "last"}, "block"),
        ("gradcam", {"epochs": 0}, "epochs"),
        ("gradcam", {"lr": -1.0}, "lr"),
        ("gradcam", {"weight_decay": -0.1}, "weight_decay"),
        ("gradcam", {"batch_size": 0}, "batch_size"),
        ("integrated-gradients", {"normalize": "maybe"}, "normalize"),
    ],
)
def test_bad_options_are_refused(name, options, message, demo_vit):
    with pytest.raises(XaikitError, match=message):
        xaikit.create("explainer", name, backbone=demo_vit, **options)


def test_unfitted_explainer_is_refused(demo_vit, birds):
    explainer = xaikit.create("explainer", "integrated-gradients", backbone=demo_vit)
    assert explainer.concept_names is None
    with pytest.raises(XaikitError, match="not fitted"):
        explainer.explain([birds[1][0]])
    with pytest.raises(XaikitError, match="not fitted"):
        explainer.concept_maps(torch.zeros(1, 3, 32, 32))
    with pytest.raises(XaikitError, match="not fitted"):
        explainer.forward(torch.zeros(1, 3, 32, 32))


def test_bad_images_are_refused(gradcam):
    with pytest.raises(XaikitError, match="expected images"):
        gradcam.concept_maps(torch.zeros(1, 1, 32, 32))
