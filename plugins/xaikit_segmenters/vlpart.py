"""The ``vlpart`` segmenter: an adapter to VLPart (facebookresearch/VLPart), which the user installs.

VLPart: Sun et al., "Going Denser with Open-Vocabulary Part Segmentation", ICCV 2023. It is a
detectron2 Mask R-CNN whose classifier is a matrix of CLIP RN50 text embeddings, so its vocabulary
can be swapped without retraining. KLC's reference pipeline used it with the built-in Pascal-Part
vocabulary (bird parts are classes 8-16).

Nothing here imports detectron2 or VLPart until a :class:`VLPartSegmenter` is built. The
conversion from VLPart's output to a :class:`~xaikit.PartMap` is the pure function
:func:`instances_to_part_map`, which the tests exercise on stand-ins of detectron2's ``Instances``.
Differences from the reference (SuperpixelCUB): the model is built once per segmenter, not per
image, and where instance masks overlap the highest-scored instance wins (the reference painted
masks in descending score order, so the lowest-scored one won).

Shapes: ``N`` instances, ``H x W`` an image, ``C`` vocabulary classes, ``D`` the text-embedding
dimension (1024 for CLIP RN50).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.backbones.device import resolve_device
from xaikit.errors import MissingDependencyError, WeightsUnavailableError, XaikitError
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
from xaikit_segmenters.vocabulary import object_part, parse_vocabulary

__all__ = [
    "BUILTIN_CLASSIFIER",
    "DEFAULT_CONFIG",
    "PASCAL_PART",
    "SETUP",
    "InstancesLike",
    "VLPartSegmenter",
    "absolute_metadata_paths",
    "builtin_names",
    "clip_prompts",
    "install_classifier",
    "instances_to_part_map",
    "load_embeddings",
    "open_clip_embeddings",
]

PASCAL_PART = "pascal_part"
"""The ``vocabulary`` value that selects VLPart's built-in Pascal-Part classifier."""
BUILTIN_CLASSIFIER = "datasets/metadata/pascal_part_clip_RN50_a+cname.npy"
"""The built-in Pascal-Part classifier inside a VLPart checkout: 93 CLIP RN50 embeddings of "a " + name."""
DEFAULT_CONFIG = "configs/pascal_part/r50_pascalpart.yaml"
RELEASES = "https://github.com/PeizeSun/VLPart/releases/download/v0.1"
_INSTALL = "install detectron2 and VLPart's requirements as docs/segmenters.md#vlpart describes"
SETUP = Setup(
    segmenter="vlpart",
    package="vlpart",
    clone="https://github.com/facebookresearch/VLPart",
    config=DEFAULT_CONFIG,
    download=f"{RELEASES}/r50_pascalpart.pth (or another model of VLPart's MODEL_ZOO.md)",
    files=(BUILTIN_CLASSIFIER,),
    modules=(
        ("clip", "pip install clip-anytorch 'setuptools<80'"), ("lvis", "pip install lvis"), ("nltk", "pip install nltk"),
        ("cv2", "pip install opencv-python-headless"), ("sklearn", "pip install scikit-learn"), ("ftfy", "pip install ftfy"),
        ("regex", "pip install regex"), ("timm", "pip install 'timm>=1.0'"),
    ),
)
"""VLPart's checkout, checkpoint and the packages its code imports (``docs/segmenters.md#vlpart``)."""


class InstancesLike(Protocol):
    """What :func:`instances_to_part_map` reads from detectron2's ``Instances`` (VLPart's output).

    Attributes:
        pred_masks: ``(N, H, W)`` ``bool`` instance masks at the image's resolution.
        scores: ``(N,)`` detection scores.
        pred_classes: ``(N,)`` ``int64`` indices into the vocabulary (0-based).
    """

    pred_masks: torch.Tensor
    scores: torch.Tensor
    pred_classes: torch.Tensor


def instances_to_part_map(instances: InstancesLike, names: Mapping[int, str], min_score: float) -> PartMap:
    """Paint VLPart's instances into one label map; where masks overlap, the highest score wins.

    Instance ``i`` has label ``pred_classes[i] + 1`` (for the built-in vocabulary, the Pascal-Part
    category id). Instances whose label is not in ``names`` (another object's parts) or whose score
    is below ``min_score`` are dropped. Score ties go to the instance VLPart listed first.

    Returns:
        A :class:`~xaikit.PartMap` with ``labels`` ``(H, W)`` ``int64`` (0 where no kept mask lies)
        and ``scores`` ``(H, W)`` ``float32``, the winning instance's score (0 on background).
    """
    masks = torch.as_tensor(instances.pred_masks).bool().cpu()
    scores = torch.as_tensor(instances.scores).float().cpu()
    labels = torch.as_tensor(instances.pred_classes).long().cpu() + 1
    keep = (scores >= min_score) & torch.isin(labels, torch.tensor(sorted(names), dtype=torch.int64))
    if not keep.any():
        height, width = masks.shape[-2:]
        return PartMap(torch.zeros(height, width, dtype=torch.int64), names, torch.zeros(height, width))
    masks, scores, labels = masks[keep], scores[keep], labels[keep]
    count = len(scores)
    order = torch.argsort(scores, descending=True, stable=True)
    rank = torch.empty(count, dtype=torch.int64)
    rank[order] = torch.arange(count, 0, -1)  # the best instance has rank `count`, the worst 1
    winner = torch.where(masks, rank.to(torch.int32).view(-1, 1, 1), 0).amax(dim=0).long()  # (H, W), 0 = no mask
    label_of = torch.zeros(count + 1, dtype=torch.int64)
    score_of = torch.zeros(count + 1, dtype=torch.float32)
    label_of[rank] = labels
    score_of[rank] = scores
    return PartMap(labels=label_of[winner], names=names, scores=score_of[winner])


def builtin_names(thing_classes: Sequence[str], objects: Sequence[str]) -> dict[int, str]:
    """Label id (class index + 1) -> class name for the classes of ``objects`` (``"bird:beak"`` ...)."""
    return {index: name for index, name in enumerate(thing_classes, start=1) if object_part(name)[0] in objects}


def clip_prompts(vocabulary: Sequence[str]) -> list[str]:
    """VLPart's text prompts: ``"a " + name`` lower-cased with ``:`` as a space (``"a bird head"``)."""
    return ["a " + name.lower().replace(":", " ") for name in vocabulary]


def load_embeddings(path: Path, count: int) -> torch.Tensor:
    """A classifier of ``count`` text embeddings from ``.npy`` or ``.pt``/``.pth``, as ``(C, D)`` float32.

    Raises:
        XaikitError: an unreadable file or one that does not hold ``count`` rows.
    """
    try:
        if path.suffix == ".npy":
            weight = torch.from_numpy(np.load(path))
        else:
            weight = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise XaikitError(f"cannot read text embeddings from {path}: {error}") from None
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[0] != count:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise XaikitError(f"text embeddings in {path} must be ({count}, D), one row per vocabulary entry, got {shape}")
    return weight.float()


def open_clip_embeddings(prompts: Sequence[str]) -> torch.Tensor:
    """CLIP RN50 text embeddings with OpenAI's weights through open_clip, ``(C, 1024)``.

    The same network and weights as VLPart's ``build_text_encoder`` (which loads them with
    OpenAI's ``clip`` package), so the embeddings match the built-in classifiers'.

    Raises:
        MissingDependencyError: open_clip is not installed.
        WeightsUnavailableError: the weights are not cached and cannot be downloaded.
    """
    try:
        import open_clip
    except ImportError:
        raise MissingDependencyError(
            "a custom vlpart vocabulary needs open_clip to embed it: pip install 'xaikit[open-clip]', or pass embeddings=FILE"
        ) from None
    try:
        model = open_clip.create_model("RN50", pretrained="openai").eval()
    except (OSError, RuntimeError):  # open_clip wraps a failed download in a RuntimeError
        raise WeightsUnavailableError(
            "cannot load CLIP RN50 (OpenAI weights) to embed the vlpart vocabulary: they are not on this machine and "
            "cannot be downloaded; run once where there is network, or pass embeddings=FILE with one row per part"
        ) from None
    with torch.no_grad():
        return model.encode_text(open_clip.get_tokenizer("RN50")(list(prompts))).float()


def install_classifier(model: Any, weight: torch.Tensor) -> None:
    """Make ``weight`` ``(C, D)`` the model's test-time classifier, as VLPart's ``reset_cls_test`` does.

    The classifier is ``(D, C + 1)``: the embeddings as columns plus a zero background column, each
    column L2-normalised, set as ``zs_weight_inference`` on every (cascade) box predictor. Passing
    a tensor, not a class list, sidesteps detectron2's immutable ``Metadata`` (VLPart issue #4).
    """
    classifier = F.normalize(torch.cat([weight.T, weight.new_zeros(weight.shape[1], 1)], dim=1), p=2, dim=0)
    predictors = model.roi_heads.box_predictor
    for predictor in predictors if isinstance(predictors, torch.nn.ModuleList) else [predictors]:
        predictor.cls_score.zs_weight_inference = classifier.to(model.device)


def absolute_metadata_paths(node: MutableMapping[str, Any], root: Path) -> None:
    """Rewrite, in place, every ``datasets/...`` path of a (nested) config relative to ``root``.

    VLPart's configs name their classifiers and category-frequency files relative to the
    repository, which breaks anywhere else (the reference hard-coded absolute paths instead).
    """
    for key, value in node.items():
        if isinstance(value, MutableMapping):
            absolute_metadata_paths(value, root)
        elif isinstance(value, str) and value.startswith("datasets/"):
            node[key] = str(root / value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value):
            node[key] = type(value)(str(root / item) if item.startswith("datasets/") else item for item in value)


class VLPartSegmenter(Segmenter):
    """Part instances from VLPart, merged into one label map per image.

    Label ids: for ``vocabulary="pascal_part"``, the Pascal-Part category ids of the kept
    ``objects`` (bird: 8 beak, 9 head, 10 eye, 11 leg, 12 foot, 13 wing, 14 neck, 15 tail,
    16 torso; names like ``"bird:beak"``); for a custom list, ``i + 1`` for ``vocabulary[i]``.

    Args:
        source: a checkout of facebookresearch/VLPart (put on ``sys.path``; ``import vlpart``).
        config: the model's config, absolute or relative to ``source``.
        weights: the checkpoint matching ``config`` (``r50_pascalpart.pth``, ...).
        vocabulary: ``"pascal_part"`` (the built-in 93 Pascal-Part classes, as KLC's reference), or
            part names, a list or one comma-separated string; name the object in each
            (``"bird head"``), since bare part names work poorly.
        embeddings: for a custom vocabulary, a ``.npy``/``.pt`` file of its text embeddings
            ``(C, 1024)``; default: computed with open_clip's CLIP RN50 (OpenAI weights).
        objects: for ``"pascal_part"``, the objects whose part classes are kept.
        score_threshold: the detector's score threshold (``ROI_HEADS.SCORE_THRESH_TEST``), 0.7.
        mask_threshold: instances scoring below it are not painted (the reference's
            ``refine_masks_by_semantics`` cut, 0.55); it only matters below ``score_threshold``.
        min_size_test: the shorter side images are resized to before the model
            (``INPUT.MIN_SIZE_TEST``); default the config's (800). Masks come back at full size.
        batch_size: images per forward pass (detectron2 models take a list of images).
        trust_pickle: let detectron2's checkpointer unpickle ``weights`` (``.pkl`` files, or
            ``.pth`` files holding Python objects); off by default, since a pickle can run code.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        XaikitError: no or a wrong source checkout or config, bad thresholds or embeddings.
        WeightsUnavailableError: no checkpoint, or open_clip's RN50 weights are unavailable.
        MissingDependencyError: detectron2 or a VLPart requirement is not installed.
    """

    def __init__(
        self,
        source: str | None = None,
        config: str = DEFAULT_CONFIG,
        weights: str | None = None,
        vocabulary: str | Sequence[str] = PASCAL_PART,
        embeddings: str | None = None,
        objects: Sequence[str] = ("bird",),
        score_threshold: float = 0.7,
        mask_threshold: float = 0.55,
        min_size_test: int | None = None,
        batch_size: int = 4,
        trust_pickle: bool = False,
        device: str = "auto",
    ) -> None:
        for name, value in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise XaikitError(f"vlpart {name} is a score in [0, 1], got {value!r}")
        self.min_size_test = None if min_size_test is None else integer_option("vlpart min_size_test", min_size_test, 1)
        self.batch_size = integer_option("vlpart batch_size", batch_size, 1)
        self.trust_pickle = flag_option("vlpart trust_pickle", trust_pickle)
        parts = None if vocabulary == PASCAL_PART else parse_vocabulary(vocabulary, "vlpart")
        self.root = source_root(source, SETUP.package, SETUP.segmenter, SETUP.clone)
        self.config = config_file(config, self.root, SETUP.segmenter)
        self.weights = checkpoint(weights, SETUP.segmenter, SETUP.download)
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.device = resolve_device(device)
        with captured("vlpart: build"):
            self.cfg, self.model = self._build()
            if parts is None:
                metadata = import_module("detectron2.data", "vlpart", _INSTALL).MetadataCatalog.get("pascal_part_val")
                self._names = builtin_names(metadata.thing_classes, (objects,) if isinstance(objects, str) else tuple(objects))
                if not self._names:
                    raise XaikitError(f"vlpart's Pascal-Part vocabulary has no parts of {', '.join(objects)}")
                classifier = load_embeddings(self.root / BUILTIN_CLASSIFIER, len(metadata.thing_classes))
            else:
                self._names = dict(enumerate(parts, start=1))
                if embeddings:
                    classifier = load_embeddings(Path(embeddings).expanduser(), len(parts))
                else:
                    classifier = open_clip_embeddings(clip_prompts(parts))
        self.vocabulary = tuple(self._names.values())
        self.classifier = classifier
        install_classifier(self.model, classifier)
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config.name!r}, weights={self.weights.name!r}, parts={len(self._names)})"

    def _build(self) -> tuple[Any, torch.nn.Module]:
        """The frozen config (thresholds, test size, absolute metadata paths) and the model with its weights, in eval mode.

        The model is built with detectron2's ``build_model`` and its checkpoint loaded by
        :func:`~xaikit_segmenters.external.weights_loader` (no unpickling unless ``trust_pickle``),
        not by ``DefaultPredictor``, whose checkpointer unpickles.
        """
        get_cfg = import_module("detectron2.config", "vlpart", _INSTALL).get_cfg
        build_model = import_module("detectron2.modeling", "vlpart", _INSTALL).build_model
        vlpart = import_module("vlpart", "vlpart", _INSTALL)  # registers VLMRCNN, its heads and Pascal-Part's metadata
        cfg = get_cfg()
        vlpart.add_vlpart_config(cfg)
        cfg.merge_from_file(str(self.config))
        cfg.MODEL.WEIGHTS = ""
        cfg.MODEL.DEVICE = str(self.device)
        cfg.MODEL.TIMM.PRETRAINED = False  # the checkpoint holds the backbone; do not download ImageNet weights
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = self.score_threshold
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = self.score_threshold
        if self.min_size_test is not None:
            cfg.INPUT.MIN_SIZE_TEST = self.min_size_test
        absolute_metadata_paths(cfg, self.root)
        cfg.freeze()
        load = weights_loader(self.weights, "vlpart", self.trust_pickle)  # refuses an unsafe file before building
        model = build_model(cfg)
        load(model)
        return cfg, model.eval()

    def model_inputs(self, image: np.ndarray) -> dict[str, Any]:
        """What ``DefaultPredictor`` feeds the model for an RGB ``(H, W, 3)`` ``uint8`` image.

        Returns:
            ``image``: ``(3, h, w)`` float32 in the config's ``INPUT.FORMAT``, the shorter side
            resized to ``INPUT.MIN_SIZE_TEST`` (longer side at most ``MAX_SIZE_TEST``);
            ``height``/``width``: the original size, at which the model returns its masks.
        """
        transforms = import_module("detectron2.data.transforms", "vlpart", _INSTALL)
        resize = transforms.ResizeShortestEdge([self.cfg.INPUT.MIN_SIZE_TEST] * 2, self.cfg.INPUT.MAX_SIZE_TEST)
        ordered = image if self.cfg.INPUT.FORMAT == "RGB" else image[:, :, ::-1]
        resized = resize.get_transform(ordered).apply_image(np.ascontiguousarray(ordered))
        return {
            "image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)),
            "height": image.shape[0],
            "width": image.shape[1],
        }

    def instances(self, samples: Sequence[Sample]) -> list[Any]:
        """VLPart's raw ``Instances`` per sample (on the CPU), ``batch_size`` images per forward pass."""
        results = []
        for start in range(0, len(samples), self.batch_size):
            inputs = [self.model_inputs(sample.image) for sample in samples[start : start + self.batch_size]]
            with captured("vlpart: inference", streams=False), torch.no_grad():
                results.extend(output["instances"].to("cpu") for output in self.model(inputs))
        return results

    @property
    def fingerprint(self) -> str:
        """Config, checkpoint and classifier contents, label names and thresholds."""
        if self._fingerprint is None:
            self._fingerprint = spec_digest({
                "segmenter": "vlpart", "version": 1, "config": file_digest(self.config), "weights": file_digest(self.weights),
                "classifier": hashlib.sha256(self.classifier.contiguous().numpy().tobytes()).hexdigest(),
                "names": sorted(self._names.items()), "score_threshold": self.score_threshold,
                "mask_threshold": self.mask_threshold, "min_size_test": self.cfg.INPUT.MIN_SIZE_TEST,
            })
        return self._fingerprint

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        """One :class:`~xaikit.PartMap` per sample at full resolution (see :func:`instances_to_part_map`)."""
        return [instances_to_part_map(found, self._names, self.mask_threshold) for found in self.instances(samples)]
