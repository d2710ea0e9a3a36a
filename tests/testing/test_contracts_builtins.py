"""Every built-in component that runs offline on a CPU passes the contract suite of its kind.

Tiny real models only: demo-vit (shipped weights), a tiny timm ViT and a tiny DINOv2 from configs,
a tiny CLIPSeg saved and loaded back. CUB runs on the real photographs beside the repository and
skips without them. Not run here: open_clip (covered by its own tests) and the segmenters that need
detectron2 and a research checkout (vlpart, san, ov-parts).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

import xaikit
from xaikit.interfaces import Capability
from xaikit.testing import (
    TINY_PARTS,
    BackboneContract,
    DatasetContract,
    ExplainerContract,
    MatcherContract,
    MetricContract,
    SegmenterContract,
    ToySegmenter,
    demo_backbone,
)

CUB_MINI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cub200-mini"
TINY_TIMM = dict(pretrained=False, model_args=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2), device="cpu")


def _helper(relative: str):
    """A helper module of another test folder, loaded by path (importlib mode gives tests no packages)."""
    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cub_root() -> Path:
    if not (CUB_MINI / "images.txt").exists():
        pytest.skip(f"real CUB photographs not found at {CUB_MINI}")
    return CUB_MINI


@pytest.fixture(scope="module", autouse=True)
def _module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Class-scoped fixtures run before the per-test cache isolation: give them a cache of their own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XAIKIT_CACHE_DIR", str(tmp_path_factory.mktemp("contract-cache")))
        patch.setenv("XAIKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
        yield


# ------------------------------------------------------------------------------------- datasets


class TestCUB(DatasetContract):
    registered_name = "cub"
    registered_options = {"root": str(CUB_MINI)}

    def make_dataset(self):
        return xaikit.create("dataset", "cub", root=str(_cub_root()))


class TestSyntheticBirds(DatasetContract):
    registered_name = "synthetic-birds"
    registered_options = {"classes": 2, "per_class": 2, "size": 64}

    @pytest.fixture(scope="class")
    @classmethod
    def dataset(cls, tiny_birds):
        return xaikit.create("dataset", "synthetic-birds", root=tiny_birds)


# ------------------------------------------------------------------------------------ backbones


class TestDemoViT(BackboneContract):
    registered_name = "demo-vit"
    registered_options = {"device": "cpu"}

    def make_backbone(self):
        return demo_backbone()


class TestTinyTimmViT(BackboneContract):
    registered_name = "timm:vit_tiny_patch16_224"
    registered_options = TINY_TIMM

    def make_backbone(self):
        return xaikit.create("backbone", "timm:vit_tiny_patch16_224", **TINY_TIMM)


class TestTinyDINOv2(BackboneContract):
    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls, tmp_path_factory):
        pytest.importorskip("transformers")
        path = tmp_path_factory.mktemp("dinov2")
        _helper("backbones/test_dinov2.py").save_tiny(path)
        return xaikit.create("backbone", "dinov2", model=str(path), device="cpu")


# ----------------------------------------------------------------------------------- segmenters


class TestAnnotationsOnCUB(SegmenterContract):
    registered_name = "annotations"

    def make_segmenter(self):
        return xaikit.create("segmenter", "annotations")

    def make_samples(self):
        dataset = xaikit.create("dataset", "cub", root=str(_cub_root()))
        return [dataset[index] for index in (0, 12, 45)]


class TestAnnotationsFromTinyPartMasks(SegmenterContract):
    def make_segmenter(self):
        return xaikit.create("segmenter", "annotations", source="masks", part_names=list(TINY_PARTS))


class TestAnnotationsFromTinyKeypoints(SegmenterContract):
    def make_segmenter(self):
        return xaikit.create("segmenter", "annotations", source="keypoints", part_names=list(TINY_PARTS))


class TestDinoParts(SegmenterContract):
    registered_name = "dino-parts"
    registered_options = {"device": "cpu", "cache": False}

    def make_segmenter(self):
        return xaikit.create("segmenter", "dino-parts", backbone=demo_backbone(), cache=False)


class TestTinyCLIPSeg(SegmenterContract):
    @pytest.fixture(scope="class")
    @classmethod
    def segmenter(cls, tmp_path_factory):
        pytest.importorskip("transformers")
        path = tmp_path_factory.mktemp("clipseg")
        _helper("plugins/segmenters/tiny_clipseg.py").save_tiny_clipseg(path)
        return xaikit.create("segmenter", "clipseg", model=str(path), device="cpu", threshold=0.5)


# ------------------------------------------------------------------------------------- matchers


class TestMutualNearestNeighbours(MatcherContract):
    registered_name = "mnn"

    def make_matcher(self):
        return xaikit.create("matcher", "mnn")


class TestMutualNearestNeighboursAboveAThreshold(MatcherContract):
    def make_matcher(self):
        return xaikit.create("matcher", "mnn", min_similarity=0.9)


class TestNearestNeighbour(MatcherContract):
    registered_name = "cosine"

    def make_matcher(self):
        return xaikit.create("matcher", "cosine")


# ----------------------------------------------------------------------------------- explainers


class TestNearestPrototype(ExplainerContract):
    registered_name = "nearest-prototype"
    registered_options = {"device": "cpu"}

    def make_explainer(self):
        return xaikit.create("explainer", "nearest-prototype", backbone=demo_backbone(), cache=False)


class TestKLCWithAnnotationsOnSyntheticBirds(ExplainerContract):
    """KLC's defaults: ground-truth CUB parts, which exist only for annotated dataset images."""

    registered_name = "klc"
    registered_options = {"device": "cpu"}

    def make_explainer(self):
        return xaikit.create("explainer", "klc", backbone=demo_backbone(), prototypes_per_class=2, cache=False)

    @pytest.fixture(scope="class")
    @classmethod
    def train(cls, tiny_birds):
        return xaikit.create("dataset", "synthetic-birds", root=tiny_birds, split="train")

    @pytest.fixture(scope="class")
    @classmethod
    def samples(cls, tiny_birds):
        test = xaikit.create("dataset", "synthetic-birds", root=tiny_birds, split="test")
        return [test[index] for index in (0, 5, 10)]

    def test_claims_no_concept_maps_for_bare_pixels(self, explainer):
        assert Capability.CONCEPT_MAPS not in explainer.capabilities  # the annotations segmenter reads annotations


class TestKLCWithAPixelSegmenter(ExplainerContract):
    def make_explainer(self):
        return xaikit.create("explainer", "klc", backbone=demo_backbone(), segmenter=ToySegmenter(), token_grid=16, cache=False)

    def test_claims_concept_maps(self, explainer):
        assert Capability.CONCEPT_MAPS in explainer.capabilities


class TestKLCWithJointDinoParts(ExplainerContract):
    def make_explainer(self):
        backbone = demo_backbone()
        segmenter = xaikit.create("segmenter", "dino-parts", backbone=backbone, cache=False)
        return xaikit.create("explainer", "klc", backbone=backbone, segmenter=segmenter, k=2, cache=False)

    def test_claims_no_concept_maps(self, explainer):
        assert Capability.CONCEPT_MAPS not in explainer.capabilities


# -------------------------------------------------------------------------------------- metrics


class TestAccuracy(MetricContract):
    registered_name = "accuracy"

    def make_metric(self):
        return xaikit.create("metric", "accuracy")


class TestConsistency(MetricContract):
    registered_name = "consistency"

    def make_metric(self):
        return xaikit.create("metric", "consistency", device="cpu")


class TestStability(MetricContract):
    registered_name = "stability"

    def make_metric(self):
        return xaikit.create("metric", "stability", seed=0, device="cpu")


class TestPartNMIARI(MetricContract):
    registered_name = "part-nmi-ari"

    def make_metric(self):
        return xaikit.create("metric", "part-nmi-ari", device="cpu")


class TestKeypointRegression(MetricContract):
    registered_name = "keypoint-regression"

    def make_metric(self):
        return xaikit.create("metric", "keypoint-regression", device="cpu")


class TestFaithfulness(MetricContract):
    registered_name = "faithfulness"

    def make_metric(self):
        pytest.importorskip("captum")
        return xaikit.create("metric", "faithfulness", image_size=32, steps=4, perturb_samples=2, device="cpu")


class TestGradCAM(ExplainerContract):
    registered_name = "gradcam"
    registered_options = {"device": "cpu"}

    def make_explainer(self):
        return xaikit.create("explainer", "gradcam", backbone=demo_backbone(), epochs=5, cache=False)


class TestIntegratedGradients(ExplainerContract):
    registered_name = "integrated-gradients"
    registered_options = {"device": "cpu"}

    def make_explainer(self):
        pytest.importorskip("captum")
        return xaikit.create("explainer", "integrated-gradients", backbone=demo_backbone(), steps=4, epochs=5, cache=False)


class TestIVPT(ExplainerContract):
    registered_name = "ivpt"
    registered_options = {"device": "cpu"}

    def make_explainer(self):
        return xaikit.create("explainer", "ivpt", backbone=demo_backbone(), prototypes=[5, 4, 3], epochs=1, train_batch_size=2)
