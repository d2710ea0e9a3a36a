"""The clipseg segmenter on a tiny CLIPSeg saved and loaded back by path, run on real CUB photographs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import xaikit
from xaikit.data.cub import CUBDataset
from xaikit.errors import WeightsUnavailableError, XaikitError
from xaikit.types import Sample

transformers = pytest.importorskip("transformers")
from xaikit_segmenters.clipseg import CLIPSegSegmenter, planes_to_labels, prompt_logits  # noqa: E402 - needs transformers
from xaikit_segmenters.vocabulary import BIRD_VOCABULARY  # noqa: E402

_spec = importlib.util.spec_from_file_location("tiny_clipseg", Path(__file__).with_name("tiny_clipseg.py"))
tiny_clipseg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_clipseg)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clipseg") / "tiny"
    tiny_clipseg.save_tiny_clipseg(path)
    return path


@pytest.fixture
def photos(cub_mini: Path) -> list[Sample]:
    """Three real CUB photographs of different sizes."""
    dataset = CUBDataset(cub_mini)
    return [dataset[index] for index in (0, 7, 31)]


def reference_probabilities(path: Path, prompts: list[str], image: np.ndarray) -> torch.Tensor:
    """CLIPSeg as its documentation runs it: processor(text, images=[image] * N), logits, upsample, sigmoid."""
    processor = transformers.CLIPSegProcessor.from_pretrained(path)
    model = transformers.CLIPSegForImageSegmentation.from_pretrained(path).eval()
    inputs = processor(text=prompts, images=[image] * len(prompts), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits.reshape(len(prompts), tiny_clipseg.IMAGE_SIZE, tiny_clipseg.IMAGE_SIZE)
    return F.interpolate(logits[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0].sigmoid()


def test_end_to_end_on_real_photographs_matches_the_documented_usage(tiny, photos):
    prompts = [f"a photo of a {name}." for name in BIRD_VOCABULARY]
    expected = reference_probabilities(tiny, prompts, photos[0].image)
    threshold = float(expected.max(dim=0).values.median())  # half the pixels background, half parts
    segmenter = xaikit.create("segmenter", "clipseg", model=str(tiny), device="cpu", threshold=threshold, batch_size=2)
    assert isinstance(segmenter, CLIPSegSegmenter) and segmenter.vocabulary == BIRD_VOCABULARY
    maps = segmenter.segment(photos)
    assert len(maps) == 3
    for part_map, sample in zip(maps, photos):
        assert part_map.labels.shape == sample.size and part_map.labels.dtype == torch.int64
        assert part_map.scores.shape == sample.size and 0 <= part_map.scores.min() <= part_map.scores.max() <= 1
        assert part_map.names == dict(enumerate(BIRD_VOCABULARY, start=1))
    torch.testing.assert_close(maps[0].scores, expected.max(dim=0).values, atol=1e-5, rtol=1e-5)
    stacked = torch.cat([torch.full((1, *photos[0].size), threshold), expected])
    agree = (maps[0].labels == stacked.argmax(dim=0)).float().mean()
    assert agree > 0.999  # only pixels within float error of the threshold may differ
    assert 0 < (maps[0].labels == 0).float().mean() < 1 and len(maps[0].present()) > 1


def test_one_prompt_and_a_custom_template(tiny, photos):
    segmenter = CLIPSegSegmenter(model=str(tiny), vocabulary="bird beak", prompt_template="{}", threshold=0.0, device="cpu")
    assert segmenter.prompts == ("bird beak",)
    (part_map,) = segmenter.segment(photos[:1])
    assert part_map.names == {1: "bird beak"} and set(part_map.labels.unique().tolist()) <= {0, 1}
    assert (part_map.labels == 1).float().mean() > 0.99  # sigmoid > 0 almost everywhere


def test_prompt_logits_accepts_both_squeeze_behaviours():
    grid = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(prompt_logits(grid, 1, 1), grid.reshape(1, 1, 3, 4))  # old .squeeze(): (h, w)
    rows = torch.arange(2 * 3 * 12.0).reshape(6, 3, 4)  # .squeeze(1): (B * N, h, w), image-major
    assert torch.equal(prompt_logits(rows, 2, 3)[1, 0], rows[3])


def test_planes_to_labels_hand_worked():
    probabilities = torch.tensor([[[0.9, 0.2, 0.4]], [[0.5, 0.3, 0.6]]])  # 2 prompts, 1 x 3 pixels
    labels, scores = planes_to_labels(probabilities, threshold=0.4)
    assert labels.tolist() == [[1, 0, 2]]
    torch.testing.assert_close(scores, torch.tensor([[0.9, 0.3, 0.6]]))
    labels, _ = planes_to_labels(torch.tensor([[[0.4]]]), threshold=0.4)
    assert labels.tolist() == [[0]]  # a tie goes to the background


def test_fingerprint_follows_weights_and_options(tiny, tmp_path):
    first = CLIPSegSegmenter(model=str(tiny), device="cpu")
    assert first.fingerprint == CLIPSegSegmenter(model=str(tiny), device="cpu").fingerprint
    assert first.fingerprint != CLIPSegSegmenter(model=str(tiny), device="cpu", threshold=0.3).fingerprint
    assert first.fingerprint != CLIPSegSegmenter(model=str(tiny), device="cpu", prompt_template="{}").fingerprint
    tiny_clipseg.save_tiny_clipseg(tmp_path / "other", seed=1)
    assert first.fingerprint != CLIPSegSegmenter(model=str(tmp_path / "other"), device="cpu").fingerprint


def test_offline_without_weights_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(
        WeightsUnavailableError, match=r"^cannot load CLIPSeg 'CIDAS/clipseg-rd64-refined': .* pass model=DIR \(as a folder, CIDAS/clipseg-rd64-refined does not exist here either\)$"
    ):
        xaikit.create("segmenter", "clipseg", device="cpu")


@pytest.mark.parametrize("path", ["/data/models/clipseg", "~/models/clipseg", "./clipseg", "models/CIDAS/clipseg-rd64-refined"])
def test_a_missing_local_directory_is_named_not_sent_to_the_hub(path):
    with pytest.raises(XaikitError, match=r"the CLIPSeg model directory .* does not exist") as caught:
        xaikit.create("segmenter", "clipseg", model=path, device="cpu")
    assert "huggingface-cli" not in str(caught.value) and "~" not in str(caught.value)


def test_a_directory_that_is_not_clipseg_is_refused(tmp_path):
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    transformers.ViTModel(config).save_pretrained(tmp_path / "vit")
    with pytest.raises(XaikitError, match="is a vit model, not CLIPSeg"):
        CLIPSegSegmenter(model=str(tmp_path / "vit"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(XaikitError, match="empty is not a transformers CLIPSeg directory"):
        CLIPSegSegmenter(model=str(tmp_path / "empty"), device="cpu")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 1.0}, r"threshold is a probability in \[0, 1\)"),
        ({"prompt_template": "a photo of a bird"}, "must contain {}"),
        ({"vocabulary": " , "}, "needs at least one part name"),
        ({"vocabulary": ["bird head", "Bird Head"]}, "got the part name 'Bird Head' twice"),
        ({"batch_size": 0}, "batch_size must be an integer of at least 1"),
    ],
)
def test_bad_options_are_one_sentence(tiny, options, message):
    with pytest.raises(XaikitError, match=message):
        CLIPSegSegmenter(model=str(tiny), device="cpu", **options)
