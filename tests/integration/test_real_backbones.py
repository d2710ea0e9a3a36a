"""The real backbone architectures end to end, with seeded random weights loaded the way a download is.

- KLC on DINOv2-B (``facebook/dinov2-base``'s published configuration, a ``save_pretrained``
  directory loaded by path) at the reference geometry: a 224-pixel squash, 16x16 tokens pooled on a
  64x64 grid.
- IVPT on timm's ``vit_base_patch14_reg4_dinov2`` at 518 pixels (37x37 patches, CLS + 4 registers),
  its weights a timm safetensors file given as ``weights=FILE``: ``xaikit train`` for one step, the
  checkpoint loaded back by ``xaikit bench`` and scored for consistency and stability.

Both run the command line on the real CUB photographs of ``../shared/data/cub200-mini`` (the
``cub_mini`` fixture skips without them). ViT-B on 2 CPU cores is slow, so every run takes 1-3 images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import xaikit
from xaikit.cli import main
from xaikit import FeatureCache, extract_features

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

pytestmark = pytest.mark.real

DINOV2_BASE_CONFIG = {
    "architectures": ["Dinov2Model"],
    "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 768,
    "image_size": 518,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-06,
    "layerscale_value": 1.0,
    "mlp_ratio": 4,
    "model_type": "dinov2",
    "num_attention_heads": 12,
    "num_channels": 3,
    "num_hidden_layers": 12,
    "patch_size": 14,
    "qkv_bias": True,
    "torch_dtype": "float32",
    "transformers_version": "4.31.0.dev0",
    "use_swiglu_ffn": False,
}
"""``config.json`` of ``facebook/dinov2-base`` as published on the hub."""

DINOV2_BASE_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}
"""``preprocessor_config.json`` of ``facebook/dinov2-base`` as published on the hub."""

REG4 = "vit_base_patch14_reg4_dinov2.lvd142m"
"""The IVPT reference backbone, by the name its ``--preset reference`` uses."""

KLC_GEOMETRY = ["--option", "backbone.resize=squash", "--option", "backbone.image_size=224"]
"""KLC's reference input: ``Resize((224, 224))``; ``token_grid`` 64 is KLC's default."""


@pytest.fixture(scope="module")
def dinov2_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``facebook/dinov2-base`` download: the published config files and seeded random weights."""
    directory = tmp_path_factory.mktemp("dinov2-base")
    torch.manual_seed(0)
    transformers.Dinov2Model(transformers.Dinov2Config(**DINOV2_BASE_CONFIG)).save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps(DINOV2_BASE_CONFIG, indent=2))  # as downloaded, not as re-saved
    (directory / "preprocessor_config.json").write_text(json.dumps(DINOV2_BASE_PREPROCESSOR, indent=2))
    return directory


@pytest.fixture(scope="module")
def reg4_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.safetensors`` of ``timm/vit_base_patch14_reg4_dinov2.lvd142m``'s layout, with seeded random weights."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(REG4, pretrained=False, num_classes=0)
    path = tmp_path_factory.mktemp("reg4") / "model.safetensors"
    save_file(model.state_dict(), path)
    return path


def write_cub_subset(source: Path, target: Path, image_ids: set[str]) -> Path:
    """The official CUB layout restricted to ``image_ids`` (all 200 class names kept), images copied."""
    for name in ("classes.txt", "parts/parts.txt"):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, target / name)
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "parts/part_locs.txt"):
        rows = [line for line in (source / name).read_text().splitlines() if line.split()[0] in image_ids]
        (target / name).write_text("\n".join(rows) + "\n")
    for line in (target / "images.txt").read_text().splitlines():
        relative = line.split(maxsplit=1)[1]
        (target / "images" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "images" / relative, target / "images" / relative)
    return target


def items(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]


def test_klc_on_dinov2_base_at_the_reference_geometry(cub_mini: Path, dinov2_base: Path, tmp_path: Path):
    out = tmp_path / "klc"
    command = [
        "bench", "--dataset", "cub", "--data-root", str(cub_mini), "--backbone", "dinov2",
        "--option", f"backbone.model={dinov2_base}", *KLC_GEOMETRY, "--limit", "3", "--device", "cpu", "--out", str(out),
    ]
    assert main(command) == 0
    records = items(out)
    assert len(records) == 3 and len({record["index"] for record in records}) == 3
    for record in records:
        assert len(record["scores"]) == 200 and record["details"]["label"] == record["label"]
        assert len(record["details"]["prototypes"]) == 3 and record["details"]["query_parts"]
    assert json.loads((out / "config.json").read_text())["components"]["backbone"]["options"]["model"] == str(dinov2_base)

    # The same backbone built here finds the run's features in the cache: 16x16 tokens of 768 dimensions.
    backbone = xaikit.create("backbone", "dinov2", model=str(dinov2_base), resize="squash", image_size=224, device="cpu")
    assert (backbone.num_prefix_tokens, backbone.preprocessing.size, backbone.preprocessing.mode) == (1, (224, 224), "squash")
    test = xaikit.create("dataset", "cub", root=cub_mini).split("test")
    queries = [test[record["index"]] for record in records]
    for sample in queries:
        cached = FeatureCache().load(backbone.cache_namespace, FeatureCache.image_key(sample.image))
        assert cached is not None and cached["cls"].shape == (768,) and cached["patches"].shape == (16, 16, 768)

    # KLC fitted here reads the run's gallery and predicts what the run recorded.
    klc = xaikit.create("explainer", "klc", backbone=backbone, segmenter="annotations", device="cpu")
    klc.fit(xaikit.create("dataset", "cub", root=cub_mini).split("train"))
    explanation = klc.explain(queries)
    assert explanation.predictions.tolist() == [record["prediction"] for record in records]
    torch.testing.assert_close(explanation.scores, torch.tensor([record["scores"] for record in records]), rtol=0, atol=1e-6)

    # A prototype's part descriptors are the reference's: tokens upsampled bilinearly to 64x64, the
    # part map squashed to 224 and then to 64 (nearest), the mean of the tokens under each part.
    prototype = klc._train[int(klc.index.dataset_index[0])]
    tokens = extract_features(backbone, [prototype], cache=True).patches  # (1, 16, 16, 768)
    upsampled = F.interpolate(tokens.permute(0, 3, 1, 2), size=(64, 64), mode="bilinear", align_corners=False)[0]
    labels = klc.segmenter.segment([prototype])[0].labels[None, None].float()
    grid = F.interpolate(F.interpolate(labels, size=(224, 224), mode="nearest-exact"), size=(64, 64), mode="nearest-exact")[0, 0].long()
    present = [int(label) for label in grid.unique() if label != 0]
    expected = torch.stack([upsampled[:, grid == label].mean(dim=1) for label in present])
    rows = klc.parts.owner == 0
    assert klc.parts.label[rows].tolist() == present
    torch.testing.assert_close(klc.parts.descriptor[rows], expected, rtol=1e-4, atol=1e-4)


def test_ivpt_on_the_518_pixel_register_vit_trains_checkpoints_and_scores(cub_mini: Path, reg4_weights: Path, tmp_path: Path):
    cub = xaikit.create("dataset", "cub", root=cub_mini)
    first = {str(cub.split(split).image_ids[0]) for split in ("train", "test")}
    tiny = write_cub_subset(cub_mini, tmp_path / "cub-2", first)  # one training step on one image, one test image
    run = tmp_path / "ivpt"
    backbone = ["--backbone", f"timm:{REG4}", "--option", f"backbone.weights={reg4_weights}", "--option", "backbone.image_size=518"]
    train = ["train", "--explainer", "ivpt", "--dataset", "cub", "--data-root", str(tiny), *backbone]
    assert main([*train, "--epochs", "1", "--batch-size", "1", "--device", "cpu", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"]["images"] == 1 and metrics["last_epoch"]["epoch"] == 1  # counted from 1
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics["last_epoch"].values())

    from xaikit_ivpt.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(run)
    assert checkpoint.metadata["backbone"]["options"]["weights"] == str(reg4_weights)
    shapes = {key: tuple(value.shape) for key, value in checkpoint.model.items()}
    assert shapes["pos_embed"] == (1, 37 * 37, 768) and shapes["reg_token"] == (1, 4, 768) and shapes["cls_token"] == (1, 1, 768)
    assert [shapes[f"bias.{layer}"] for layer in range(5)] == [(count, 37, 37) for count in (17, 14, 11, 8, 5)]
    assert shapes["head"] == (200, 768)

    out = tmp_path / "bench"
    bench = ["bench", "--explainer", "ivpt", "--dataset", "cub", "--data-root", str(cub_mini), "--option", f"checkpoint={run}"]
    scores = ["--metric", "consistency", "--metric", "stability", "--option", "metric.stability.seed=0"]
    assert main([*bench, *scores, "--limit", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out)]) == 0
    records = items(out)
    assert len(records) == 2 and all(len(record["scores"]) == 200 for record in records)
    assert all(record["details"]["layers"] == ["block 8", "block 9", "block 10", "block 11", "final"] for record in records)
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    classes = len({record["label"] for record in records})
    for name in ("consistency", "stability"):
        assert 0 <= summary[name]["value"] <= 100
        # IVPT's 10 concepts of block 10 are shared by every class: scored in every class present.
        assert (summary[name]["details"]["mode"], summary[name]["details"]["units"]) == ("class-agnostic", 10 * classes)

    # The checkpoint loads back in Python too, and explains as bench did, with the 37x37 maps the metrics read.
    ivpt = xaikit.create("explainer", "ivpt", checkpoint=str(run), device="cpu")
    assert ivpt.backbone.num_prefix_tokens == 5 and ivpt.backbone.preprocessing.size == (518, 518)
    explanation = ivpt.explain([cub.split("test")[records[0]["index"]]])
    assert explanation.concept_maps.shape == (1, 10, 37, 37)
    assert explanation.concept_maps.sum(1).max() < 1  # the background channel holds the rest of each softmax
    torch.testing.assert_close(explanation.scores[0], torch.tensor(records[0]["scores"]), rtol=0, atol=1e-5)
