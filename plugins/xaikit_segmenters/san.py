"""The ``san`` segmenter: an adapter to SAN (MendelXu/SAN), which the user installs.

SAN: Xu et al., "Side Adapter Network for Open-Vocabulary Semantic Segmentation", CVPR 2023. A
side network on a frozen CLIP ViT predicts masks and their CLIP-based classes; it labels every
pixel with one vocabulary entry. The adapter builds SAN's model from its config, loads the
checkpoint without unpickling it (see :func:`~xaikit_segmenters.external.weights_loader`) and feeds
it what SAN's ``predict.py`` ``Predictor`` would:

* the image with its short side resized (640 by default, as ``Predictor``) as a **0-255 float**
  ``(3, H, W)`` RGB tensor (SAN subtracts CLIP's mean x 255 inside). Normalising to ImageNet's 0-1
  statistics first, as KLC's author did, is wrong for SAN;
* the vocabulary lower-cased, then augmented with COCO names by SAN's own
  ``Predictor.augment_vocabulary``. ``Predictor.predict`` also deduplicates it with
  ``list(set(...))``, which **reorders** it; :func:`san_to_part_map` maps ids back by name, so the
  adapter's maps agree with ``Predictor.predict``'s (the integration tests check it);
* augmentation classes (and, for ``Predictor.predict``'s output, its "other" id) become background.

SAN's CLIP is built without pretrained weights (``CLIP_PRETRAINED_NAME = ""``): the checkpoint
holds them, so nothing is downloaded. It runs with open_clip >= 2.24 through
:mod:`xaikit_segmenters.san_compat`. Nothing here imports detectron2 or SAN until a
:class:`SANSegmenter` is built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

from xaikit.backbones.device import resolve_device
from xaikit.errors import MissingDependencyError, XaikitError
from xaikit.interfaces import Segmenter
from xaikit.quiet import captured
from xaikit.types import PartMap, Sample
from xaikit.validation import flag_option, integer_option
from xaikit_segmenters.external import (
    Setup,
    checkpoint,
    config_file,
    file_digest,
    import_module,
    source_root,
    spec_digest,
    weights_loader,
)
from xaikit_segmenters.san_compat import patched_san
from xaikit_segmenters.vocabulary import BIRD_VOCABULARY, parse_vocabulary

__all__ = ["AUGMENTATIONS", "DEFAULT_CONFIG", "SETUP", "SANSegmenter", "san_input", "san_to_part_map"]

DEFAULT_CONFIG = "configs/san_clip_vit_res4_coco.yaml"
AUGMENTATIONS = ("COCO-stuff", "COCO-all", "none")
"""Vocabulary augmentation, as ``Predictor.predict(augment_vocabulary=...)``: COCO's stuff
classes (sky, grass, tree, ...: the default, they absorb the background without competing with
the bird's parts), all COCO classes (``"bird"`` then takes part of the body), or none."""
SHORT_SIDE = 640
"""The short side SAN's ``Predictor`` resizes images to."""
_INSTALL = "install detectron2 and SAN's requirements as docs/segmenters.md#san describes"
SETUP = Setup(
    segmenter="san",
    package="san",
    clone="https://github.com/MendelXu/SAN",
    config=DEFAULT_CONFIG,
    download="san_vit_b_16.pth from https://huggingface.co/Mendel192/san",
    modules=(
        ("open_clip", "pip install 'xaikit[open-clip]'"), ("wandb", "pip install wandb 'protobuf>=5'"),
        ("ftfy", "pip install ftfy"), ("regex", "pip install regex"), ("scipy", "pip install scipy"),
        ("huggingface_hub", "pip install huggingface_hub"), ("timm", "pip install 'timm>=1.0'"),
    ),
)
"""SAN's checkout, checkpoint and the packages its code imports (``docs/segmenters.md#san``)."""


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


def san_input(image: np.ndarray, short_side: int) -> torch.Tensor:
    """SAN's input for an RGB ``(H, W, 3)`` ``uint8`` image: ``(3, h, w)`` float32 in 0-255.

    The shorter side becomes ``short_side`` (the longer one scaled and truncated), resized by PIL's
    default filter, exactly as ``Predictor._preprocess`` does for 640.
    """
    height, width = image.shape[:2]
    size = (short_side, int(height * short_side / width)) if width < height else (int(width * short_side / height), short_side)
    resized = np.asarray(Image.fromarray(image).convert("RGB").resize(size))
    return torch.from_numpy(resized.copy()).float().permute(2, 0, 1)


def predict_module(root: Path) -> ModuleType:
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
        min_size_test: the short side images are resized to (default 640, as SAN's ``Predictor``);
            maps come back at the image's size.
        batch_size: images per forward pass.
        trust_pickle: let detectron2's checkpointer unpickle ``weights``; off by default.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        XaikitError: no or a wrong source checkout or config, an unknown augmentation, a checkpoint
            that needs unpickling (without ``trust_pickle``) or does not fit the config.
        WeightsUnavailableError: no checkpoint.
        MissingDependencyError: detectron2 or a SAN requirement is not installed.
    """

    def __init__(
        self,
        source: str | None = None,
        config: str = DEFAULT_CONFIG,
        weights: str | None = None,
        vocabulary: str | Sequence[str] | None = None,
        augment: str = "COCO-stuff",
        min_size_test: int = SHORT_SIDE,
        batch_size: int = 4,
        trust_pickle: bool = False,
        device: str = "auto",
    ) -> None:
        if augment not in AUGMENTATIONS:
            raise XaikitError(f"unknown san augment '{augment}'; use one of {', '.join(AUGMENTATIONS)}")
        self.vocabulary = parse_vocabulary(BIRD_VOCABULARY if vocabulary is None else vocabulary, "san")
        self.augment = augment
        self.min_size_test = integer_option("san min_size_test", min_size_test, 1)
        self.batch_size = integer_option("san batch_size", batch_size, 1)
        self.trust_pickle = flag_option("san trust_pickle", trust_pickle)
        self.root = source_root(source, SETUP.package, SETUP.segmenter, SETUP.clone)
        self.config = config_file(config, self.root, SETUP.segmenter)
        self.weights = checkpoint(weights, SETUP.segmenter, SETUP.download)
        self.device = resolve_device(device)
        with captured("san: build"):
            predictor_class = predict_module(self.root).Predictor
            self.predictor = predictor_class.__new__(predictor_class)  # SAN's helpers, around the model built here
            self.predictor.model = self._build()
        self.model_vocabulary = self.predictor.augment_vocabulary(
            [name.lower().strip() for name in self.vocabulary], self.augment
        )
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config.name!r}, weights={self.weights.name!r}, parts={len(self.vocabulary)})"

    def _build(self) -> torch.nn.Module:
        """SAN's model from its config on ``self.device``, CLIP without downloaded weights, the checkpoint loaded, in eval mode."""
        get_cfg = import_module("detectron2.config", "san", _INSTALL).get_cfg
        build_model = import_module("detectron2.modeling", "san", _INSTALL).build_model
        add_deeplab_config = import_module("detectron2.projects.deeplab", "san", _INSTALL).add_deeplab_config
        san = import_module("san", "san", _INSTALL)  # registers SAN's meta-architecture
        cfg = get_cfg()
        add_deeplab_config(cfg)
        san.add_san_config(cfg)
        cfg.merge_from_file(str(self.config))
        cfg.MODEL.WEIGHTS = ""
        cfg.MODEL.DEVICE = str(self.device)
        cfg.MODEL.SAN.CLIP_PRETRAINED_NAME = ""  # the checkpoint holds CLIP's weights: download nothing
        cfg.freeze()
        load = weights_loader(self.weights, "san", self.trust_pickle)  # refuses an unsafe file before building
        with patched_san(import_module("san.model.san", "san", _INSTALL)):
            model = build_model(cfg)
        load(model)
        return model.eval()

    @property
    def fingerprint(self) -> str:
        """Config and checkpoint contents, vocabulary, augmentation and input size."""
        if self._fingerprint is None:
            self._fingerprint = spec_digest({
                "segmenter": "san", "version": 2, "config": file_digest(self.config), "weights": file_digest(self.weights),
                "vocabulary": list(self.vocabulary), "augment": self.augment, "min_size_test": self.min_size_test,
            })
        return self._fingerprint

    def outputs(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        """SAN's raw output per sample: ``{"sem_seg": (C, H, W) float32 on the CPU, "vocabulary": [...]}``.

        ``C`` is the augmented vocabulary's length; the first ``len(vocabulary)`` classes are the
        parts asked for, lower-cased, in order. ``batch_size`` images per forward pass.
        """
        results = []
        for start in range(0, len(samples), self.batch_size):
            inputs = [
                {"image": san_input(sample.image, self.min_size_test), "height": sample.size[0], "width": sample.size[1],
                 "vocabulary": self.model_vocabulary}
                for sample in samples[start : start + self.batch_size]
            ]
            with captured("san: inference", streams=False), torch.no_grad():
                results.extend(
                    {"sem_seg": output["sem_seg"].float().cpu(), "vocabulary": self.model_vocabulary[: len(self.vocabulary)]}
                    for output in self.predictor.model(inputs)
                )
        return results

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        """One :class:`~xaikit.PartMap` per sample at full resolution, with the winning class's score."""
        return [san_to_part_map(output, self.vocabulary) for output in self.outputs(samples)]
