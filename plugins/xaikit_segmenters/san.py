"""The ``san`` segmenter: an adapter to SAN (MendelXu/SAN), which the user installs.

SAN: Xu et al., "Side Adapter Network for Open-Vocabulary Semantic Segmentation", CVPR 2023. A
side network on a frozen CLIP ViT predicts masks and their CLIP-based classes; it labels every
pixel with one vocabulary entry. Its ``predict.py`` ``Predictor`` is used as it is:

* it takes a PIL RGB image and builds SAN's input itself: short side 640, a **0-255 float**
  ``(3, H, W)`` tensor (SAN subtracts CLIP's mean x 255 inside). Normalising to ImageNet's 0-1
  statistics first, as KLC's author did, is wrong for SAN;
* it lower-cases and deduplicates the vocabulary with ``list(set(...))``, which **reorders** it; the
  ids of its ``sem_seg`` follow the vocabulary it returns, so :func:`san_to_part_map` maps them
  back through that list by name;
* with augmentation it appends COCO names, and collapses their ids to ``len(vocabulary)``
  ("other"), which becomes background here. Without it, every pixel is some part.

Nothing here imports detectron2 or SAN until a :class:`SANSegmenter` is built.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from PIL import Image

from xaikit.backbones.device import resolve_device
from xaikit.errors import MissingDependencyError, WeightsUnavailableError, XaikitError
from xaikit.interfaces import Segmenter
from xaikit.types import PartMap, Sample
from xaikit_segmenters.external import checkpoint, config_file, file_digest, source_root, spec_digest
from xaikit_segmenters.vocabulary import BIRD_VOCABULARY, parse_vocabulary

__all__ = ["AUGMENTATIONS", "DEFAULT_CONFIG", "SANSegmenter", "san_to_part_map"]

DEFAULT_CONFIG = "configs/san_clip_vit_res4_coco.yaml"
AUGMENTATIONS = ("COCO-stuff", "COCO-all", "none")
"""Vocabulary augmentation, passed to ``Predictor.predict(augment_vocabulary=...)``: COCO's stuff
classes (sky, grass, tree, ...: the default, they absorb the background without competing with
the bird's parts), all COCO classes (``"bird"`` then takes part of the body), or none."""
_INSTALL = "install detectron2 and SAN's requirements as docs/segmenters.md#san describes"


def san_to_part_map(output: Mapping[str, Any], vocabulary: Sequence[str]) -> PartMap:
    """Turn SAN's output into a :class:`~xaikit.PartMap` whose label ``i + 1`` is ``vocabulary[i]``.

    Args:
        output: ``{"sem_seg": ..., "vocabulary": [...]}`` as SAN returns it; ``sem_seg`` is either
            ``Predictor.predict``'s ``(H, W)`` ids into the returned ``vocabulary`` (an id equal to
            its length is "other"), or the model's ``(C, H, W)`` class scores, whose classes
            beyond the returned vocabulary are augmentation classes.
        vocabulary: the part names asked for, in label order.

    Returns:
        ``labels`` ``(H, W)`` ``int64``, 0 for "other" and augmentation classes; ``scores``
        ``(H, W)``, the winning class's score, for ``(C, H, W)`` input only.
    """
    returned = [" ".join(str(name).lower().split()) for name in output["vocabulary"]]
    label_of_name = {" ".join(name.lower().split()): label for label, name in enumerate(vocabulary, start=1)}
    table = torch.tensor([label_of_name.get(name, 0) for name in returned] + [0], dtype=torch.int64)
    segmentation = torch.as_tensor(output["sem_seg"]).cpu()
    scores = None
    if segmentation.ndim == 3:
        scores, segmentation = segmentation.float().max(dim=0)
    labels = table[segmentation.long().clamp(0, len(returned))]
    return PartMap(labels=labels, names=dict(enumerate(vocabulary, start=1)), scores=scores)


def _predict_module(root: Path) -> ModuleType:
    """SAN's ``predict.py``, imported under a private name (``predict`` is too common a module name)."""
    spec = importlib.util.spec_from_file_location("xaikit_san_predict", root / "predict.py")
    if spec is None or spec.loader is None or not (root / "predict.py").is_file():
        raise XaikitError(f"{root} has no predict.py; pass source=DIR, a checkout of https://github.com/MendelXu/SAN")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as error:
        raise MissingDependencyError(
            f"segmenter 'san' needs the Python module '{error.name}', which is not installed; {_INSTALL}"
        ) from None
    return module


class SANSegmenter(Segmenter):
    """Semantic part maps from SAN, one vocabulary entry per label.

    Args:
        source: a checkout of MendelXu/SAN (put on ``sys.path``).
        config: the model's config, absolute or relative to ``source``.
        weights: the checkpoint matching ``config`` (``san_vit_b_16.pth`` or ``san_vit_large_14.pth``).
        vocabulary: part names, a list or one comma-separated string; default the shared bird
            vocabulary. Names are compared lower-cased, so two that differ only in case are refused.
        augment: ``"COCO-stuff"``, ``"COCO-all"`` or ``"none"`` (see :data:`AUGMENTATIONS`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (SAN itself always picks CUDA
            when it exists; the model is moved afterwards).

    Raises:
        XaikitError: no or a wrong source checkout or config, an unknown augmentation.
        WeightsUnavailableError: no checkpoint, or SAN's CLIP weights cannot be fetched.
        MissingDependencyError: detectron2 or a SAN requirement is not installed.
    """

    def __init__(
        self,
        source: str | None = None,
        config: str = DEFAULT_CONFIG,
        weights: str | None = None,
        vocabulary: str | Sequence[str] | None = None,
        augment: str = "COCO-stuff",
        device: str = "auto",
    ) -> None:
        if augment not in AUGMENTATIONS:
            raise XaikitError(f"unknown san augment '{augment}'; use one of {', '.join(AUGMENTATIONS)}")
        self.vocabulary = parse_vocabulary(BIRD_VOCABULARY if vocabulary is None else vocabulary, "san")
        self.augment = augment
        self.root = source_root(source, "san", "san", "https://github.com/MendelXu/SAN")
        self.config = config_file(config, self.root, "san")
        self.weights = checkpoint(weights, "san", "san_vit_b_16.pth from https://huggingface.co/Mendel192/san")
        self.device = resolve_device(device)
        predict = _predict_module(self.root)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # SAN prints as it loads
                self.predictor = predict.Predictor(config_file=str(self.config), model_path=str(self.weights))
        except OSError as error:
            raise WeightsUnavailableError(
                f"SAN could not load its CLIP weights through open_clip ({error}); run SAN's pre_download() where there is network"
            ) from None
        self.predictor.model.to(self.device)
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config.name!r}, weights={self.weights.name!r}, parts={len(self.vocabulary)})"

    @property
    def fingerprint(self) -> str:
        """Config and checkpoint contents, vocabulary and augmentation."""
        if self._fingerprint is None:
            self._fingerprint = spec_digest({
                "segmenter": "san", "version": 1, "config": file_digest(self.config), "weights": file_digest(self.weights),
                "vocabulary": list(self.vocabulary), "augment": self.augment,
            })
        return self._fingerprint

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        """One :class:`~xaikit.PartMap` per sample at full resolution (``scores`` is ``None``)."""
        maps = []
        for sample in samples:
            with contextlib.redirect_stdout(io.StringIO()):  # predict() prints the vocabulary on every call
                output = self.predictor.predict(Image.fromarray(sample.image), list(self.vocabulary), self.augment)
            maps.append(san_to_part_map(output, self.vocabulary))
        return maps
