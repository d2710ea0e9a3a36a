"""The ``ivpt`` explainer: Interpretable Visual Prompt Tuning on a frozen timm ViT.

Wang, Y. et al., "Exploring Interpretability for Visual Prompt Tuning with Hierarchical Concepts"
(IVPT), 2025. The network is :class:`~xaikit_ivpt.model.IVPTModel`, trained by
:func:`~xaikit_ivpt.train.train_model`. Where the reference code and the paper disagree, the
reference code is the default and the paper is an option (see ``docs/ivpt.md``):

* classification head: one shared linear head averaged over parts (reference code,
  ``head="shared"``) or one head per concept (the paper, ``head="per-concept"``);
* grouping at evaluation: the reference code leaves the Gumbel noise on, which makes explanations
  random; xaikit groups with the noiseless softmax (``eval_grouping="softmax"``, the default) and
  ``eval_grouping="gumbel"`` restores the reference behaviour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from xaikit.errors import XaikitError
from xaikit.figure_layout import readable_class_name
from xaikit.interfaces import Backbone, Capability, Dataset, Explainer
from xaikit.distributed import Distributed
from xaikit.training import Trainable, TrainProgress
from xaikit.types import Explanation, Sample
from xaikit.validation import choice_option, flag_option, integer_option, number_option
from xaikit_ivpt.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from xaikit_ivpt.losses import LossOptions, LossWeights
from xaikit_ivpt.model import EMPTY_REGIONS, GROUPINGS, HEADS, INITS, PROMPT_REGIONS, IVPTModel, check_vit, layer_names
from xaikit_ivpt.naming import names_from_rates, part_hit_rates
from xaikit_ivpt.train import TrainSettings, train_model

__all__ = ["DEFAULT_BACKBONE", "PRESETS", "IVPT", "soft_centroids"]

DEFAULT_BACKBONE = "demo-vit"
"""The backbone built when none is given and no checkpoint names one."""

PRESETS: dict[str, dict[str, Any]] = {
    "reference": {
        "backbone": "timm:vit_base_patch14_reg4_dinov2.lvd142m",
        "options": {
            "backbone": {"image_size": 518, "resize": "center-crop", "crop_pct": 1.0},
            "dataset": {"crop_to_bbox": False},
            "explainer": {"epochs": 25, "train_batch_size": 16, "seed": 42, "augment": "reference", "workers": 8},
        },
    },
}
"""``xaikit train --preset reference``: the reference recipe (DINOv2-B with 4 registers at 518 px,
full uncropped images, batch 16, 25 epochs, seed 42, flips and RandomAffine), for GPU users."""

_INFERENCE_BATCH = 32


def soft_centroids(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Probability-weighted centres of maps ``(B, K, h, w)`` in model-input pixels ``size = (H, W)``: ``(B, K, 2)`` as ``(x, y)``."""
    height, width = maps.shape[-2:]
    ys = (torch.arange(height, dtype=maps.dtype, device=maps.device) + 0.5) * (size[0] / height)
    xs = (torch.arange(width, dtype=maps.dtype, device=maps.device) + 0.5) * (size[1] / width)
    mass = maps.sum(dim=(-2, -1)).clamp_min(1e-8)
    x = (maps.sum(-2) * xs).sum(-1) / mass
    y = (maps.sum(-1) * ys).sum(-1) / mass
    return torch.stack([x, y], dim=-1)


class IVPT(Explainer, Trainable):
    """Interpretable Visual Prompt Tuning: concept prototypes over the last ViT layers, fused into prompts.

    Args:
        backbone: a timm vision-transformer backbone (``demo-vit``, ``timm:<model>``) or its
            registered name; ``None``: the checkpoint's backbone, else ``demo-vit``.
        checkpoint: a training run directory (``runs/NAME``) or checkpoint file to load; the
            architecture options then come from the checkpoint and ``fit`` trains nothing.
        prototypes: prototype count per set, fine to coarse, each including a background channel;
            all but the last sit at the input of the last ``len - 1`` blocks, the last after the
            final block, and ``prototypes[-1] - 1`` prompts join each block.
        head: ``shared`` (reference code: one linear head, scores averaged over parts) or
            ``per-concept`` (the paper: one head per concept).
        tau: Gumbel-softmax temperature.
        empty_regions: ``uniform`` (reference code: ``1 / G`` grouping weights for a region no
            patch wins) or ``grouping`` (the grouping layer's output for the zero region feature).
        prompt_regions: ``detached`` (reference code: the prompts pool detached maps and tokens)
            or ``attached``.
        train_prompt_norm: train the prompt LayerNorm (the reference code leaves it frozen).
        init: ``trunc-normal`` (reference code: head and prompt ``Linear`` from a truncated normal,
            std 0.02) or ``pytorch``.
        eval_grouping: ``softmax`` (deterministic, default) or ``gumbel`` (the reference code's
            noisy evaluation).
        concept_layer: which prototype set :meth:`concept_maps` returns (an index into
            ``prototypes``, negative from the end); the default ``-3`` is the set feeding the
            second-to-last block, which the reference evaluates for consistency and stability.
        concept_background: include the background channel (last) in :meth:`concept_maps`; use
            it with ``concept_layer=-1`` for the part-discovery metrics.
        concept_names: how concepts are named in explanations, figures and :attr:`concept_names`:
            ``None`` numbers them (``concept 1`` ...); ``"parts"`` names every layer's concepts,
            when fitted, after the part each hits most often on the fitting (training) split
            (:meth:`name_concepts`); a list of ``prototypes[-1] - 1`` names names the final concepts.
        epochs, train_batch_size, lr_tokens, lr_head, step_size, gamma, clip, seed, augment,
        train_grouping, precision, workers: the training recipe, see :class:`~xaikit_ivpt.train.TrainSettings`.
        ce_weight, consistency_weight, presence_weight, background_weight, equivariance_weight,
        entropy_weight, tv_weight, orthogonality_weight: loss weights (0 switches a term off).
        consistency_target, tv_normalisation, background_mask, equivariance_background,
        equivariance_mask: how the loss terms are computed, see :class:`~xaikit_ivpt.losses.LossOptions`
            (defaults: the reference code's).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for a backbone built here.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.PREDICTIONS, Capability.CONCEPT_MAPS, Capability.DIFFERENTIABLE})
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = PRESETS
    run_files: ClassVar[tuple[str, ...]] = (CHECKPOINT_FILE,)
    concept_mode: ClassVar[str] = "class-agnostic"  # the concepts are shared by every class
    parallel_fit: ClassVar[bool] = True  # without a checkpoint, fit() trains with DDP across the torchrun processes

    def __init__(
        self,
        backbone: Backbone | str | None = None,
        checkpoint: str | None = None,
        prototypes: Sequence[int] = (17, 14, 11, 8, 5),
        head: str = "shared",
        tau: float = 1.0,
        empty_regions: str = "uniform",
        prompt_regions: str = "detached",
        train_prompt_norm: bool = False,
        init: str = "trunc-normal",
        eval_grouping: str = "softmax",
        concept_layer: int = -3,
        concept_background: bool = False,
        concept_names: str | list[str] | None = None,
        epochs: int = 10,
        train_batch_size: int = 16,
        lr_tokens: float = 2e-4,
        lr_head: float = 1e-2,
        step_size: int = 4,
        gamma: float = 0.5,
        clip: float = 2.0,
        seed: int = 42,
        augment: str = "flip",
        train_grouping: str = "gumbel",
        precision: str = "fp32",
        workers: int = 0,
        ce_weight: float = 1.0,
        consistency_weight: float = 1.0,
        presence_weight: float = 1.0,
        background_weight: float = 1.0,
        equivariance_weight: float = 1.0,
        entropy_weight: float = 1.0,
        tv_weight: float = 1.0,
        orthogonality_weight: float = 1.0,
        consistency_target: str = "detached",
        tv_normalisation: str = "pixels",
        background_mask: str = "radial",
        equivariance_background: bool = False,
        equivariance_mask: bool = False,
        device: str = "auto",
    ) -> None:
        weights = LossWeights(
            ce=ce_weight, consistency=consistency_weight, presence=presence_weight, background=background_weight,
            equivariance=equivariance_weight, entropy=entropy_weight, tv=tv_weight, orthogonality=orthogonality_weight,
        )
        self.settings = TrainSettings(
            epochs=epochs, batch_size=train_batch_size, lr_tokens=lr_tokens, lr_head=lr_head, step_size=step_size,
            gamma=gamma, clip=clip, seed=seed, augment=augment, grouping=train_grouping, precision=precision,
            workers=workers, weights=weights,
            losses=LossOptions(
                consistency_target=consistency_target, tv_normalisation=tv_normalisation, background_mask=background_mask,
                equivariance_background=equivariance_background, equivariance_mask=equivariance_mask,
            ),
        )
        self.architecture = {
            "prototypes": [integer_option("prototypes", count, 2) for count in prototypes],
            "head": choice_option("head", head, HEADS), "tau": number_option("tau", tau, 1e-3),
            "empty_regions": choice_option("empty_regions", empty_regions, EMPTY_REGIONS),
            "prompt_regions": choice_option("prompt_regions", prompt_regions, PROMPT_REGIONS),
            "train_prompt_norm": flag_option("train_prompt_norm", train_prompt_norm), "init": choice_option("init", init, INITS),
        }
        self.eval_grouping = choice_option("eval_grouping", eval_grouping, GROUPINGS)
        self.concept_background = flag_option("concept_background", concept_background)
        if isinstance(concept_layer, bool) or not isinstance(concept_layer, int):
            raise XaikitError(f"option concept_layer must be an integer index into the prototype sets, got {concept_layer!r}")
        self.concept_layer_option = concept_layer
        self.device_option = device
        self.checkpoint: Checkpoint | None = None
        self.classes: list[str] | None = None
        self.hierarchy: list[list[int | None]] | None = None
        self.model: IVPTModel | None = None
        if checkpoint is not None:
            self.checkpoint = load_checkpoint(checkpoint)
            self.checkpoint_source = str(checkpoint)
            self.architecture = dict(self.checkpoint.metadata["architecture"])
        self.backbone = self._resolve_backbone(backbone)
        check_vit(getattr(self.backbone, "model", self.backbone))  # refuse a non-timm backbone now, not after training
        self.concept_layer = self._concept_layer(concept_layer)
        self.names_by_parts, self.layer_concept_names = self._concept_names_option(concept_names)
        if self.checkpoint is not None:
            self._restore(self.checkpoint)

    # --------------------------------------------------------------------------- construction
    def _resolve_backbone(self, backbone: Backbone | str | None) -> Backbone:
        import xaikit

        if isinstance(backbone, Backbone):
            options = dict(getattr(backbone, "options", {}))  # a timm backbone's: a checkpoint rebuilds it by name
            self.backbone_spec = {"name": getattr(backbone, "name", type(backbone).__name__), "options": options}
            return backbone
        if backbone is None and self.checkpoint is not None:
            spec = self.checkpoint.metadata.get("backbone") or {"name": DEFAULT_BACKBONE, "options": {}}
            options = {key: value for key, value in spec.get("options", {}).items() if key != "device"}
            self.backbone_spec = {"name": spec["name"], "options": options}
            return xaikit.create("backbone", spec["name"], **options, device=self.device_option)
        name = backbone or DEFAULT_BACKBONE
        self.backbone_spec = {"name": name, "options": {}}
        return xaikit.create("backbone", name, device=self.device_option)

    def _concept_layer(self, index: int) -> int:
        count = len(self.architecture["prototypes"])
        if not -count <= index < count:
            raise XaikitError(f"option concept_layer must index one of the {count} prototype sets (from {-count} to {count - 1}), got {index}")
        return index % count

    def _concept_names_option(self, value: str | list[str] | None) -> tuple[bool, dict[int, list[str]]]:
        """The checked ``concept_names`` option: whether to name by parts, and the given names per prototype set."""
        groups = self.architecture["prototypes"][-1] - 1
        if value is None or value == "parts":
            return value == "parts", {}
        if isinstance(value, str) or len(value) != groups or not all(isinstance(name, str) for name in value):
            raise XaikitError(
                f"option concept_names must be null, parts, or a list of the {groups} final concepts' names, got {value!r}"
            )
        return False, {len(self.architecture["prototypes"]) - 1: list(value)}

    def _build(self, num_classes: int) -> IVPTModel:
        """A fresh model, initialised from the training seed, on the backbone's device."""
        torch.manual_seed(self.settings.seed)
        grid = self.backbone.grid(torch.empty(1, 3, *self.backbone.preprocessing.size))
        model = IVPTModel(self.backbone.model, grid, num_classes, **self.architecture)
        return model.to(self.backbone.device).eval()

    def _restore(self, checkpoint: Checkpoint) -> None:
        """Load a checkpoint's weights, refusing one trained on other backbone weights or input size."""
        metadata = checkpoint.metadata
        recorded = (metadata.get("backbone") or {}).get("fingerprint")
        if recorded is not None and recorded != self.backbone.fingerprint:
            name = (metadata.get("backbone") or {}).get("name")
            raise XaikitError(
                f"checkpoint {self.checkpoint_source} was trained on backbone '{name}' with other weights than "
                f"'{self.backbone_spec['name']}'; leave --backbone out to use the checkpoint's own"
            )
        self.classes = list(metadata["classes"])
        try:
            self.model = self._build(len(self.classes))
            self.model.load_state_dict(checkpoint.model)
        except (RuntimeError, TypeError, ValueError) as error:
            raise XaikitError(f"checkpoint {self.checkpoint_source} does not fit this model: {str(error).splitlines()[0]}") from None
        self.hierarchy = metadata.get("hierarchy")

    # ------------------------------------------------------------------------------- training
    def describe_fit(self, dataset: Dataset, name: str) -> str:
        """``loading NAME from CHECKPOINT`` or ``fitting NAME on N training images``, and the naming of concepts if asked."""
        what = super().describe_fit(dataset, name) if self.checkpoint is None else f"loading {name} from {self.checkpoint_source}"
        if self.names_by_parts:
            what += f", then naming its concepts after the parts they hit in the {len(dataset)} training images"
        return what

    def fit(self, dataset: Dataset) -> IVPT:
        """Train on ``dataset`` in memory, or, with a checkpoint, check that it knows ``dataset``'s classes.

        With ``concept_names="parts"``, then name the concepts on ``dataset`` (:meth:`name_concepts`).
        """
        if self.checkpoint is not None:
            if list(dataset.classes) != self.classes:
                raise XaikitError(
                    f"checkpoint {self.checkpoint_source} was trained on {len(self.classes)} other classes than this "
                    f"dataset's {len(dataset.classes)}"
                )
        else:
            self.train(dataset)
        if self.names_by_parts:
            self.name_concepts(dataset)
        return self

    def train(
        self,
        dataset: Dataset,
        out: Path | None = None,
        *,
        resume: bool = False,
        progress: TrainProgress | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> list[dict[str, float]]:
        """Train on ``dataset``; with ``out``, checkpoint into ``out/checkpoint.safetensors`` after every epoch.

        After the last epoch the fine-to-coarse :attr:`hierarchy` is computed on ``dataset`` and
        stored in the final checkpoint.
        """
        self.classes = list(dataset.classes)
        self.model = self._build(len(self.classes))
        file = None if out is None else Path(out) / CHECKPOINT_FILE
        backbone = dict((record or {}).get("backbone") or self.backbone_spec)
        metadata = {
            "architecture": self.architecture,
            "classes": self.classes,
            "backbone": {**backbone, "fingerprint": self.backbone.fingerprint},
            "settings": dataclasses.asdict(self.settings),
        }
        distributed = Distributed.from_environment()
        if file is not None and distributed.writes:
            file.parent.mkdir(parents=True, exist_ok=True)
        history = train_model(
            self.model, self.backbone.preprocessing, dataset, self.settings, device=self.backbone.device,
            checkpoint=file, resume=resume, metadata=metadata, progress=progress, distributed=distributed,
        )
        self.hierarchy = self.mean_hierarchy(dataset)
        if file is not None and distributed.writes:
            final = load_checkpoint(file)
            final.metadata["hierarchy"] = self.hierarchy
            save_checkpoint(file, final)
        return history

    # ------------------------------------------------------------------------------ inference
    def _require_model(self) -> IVPTModel:
        if self.model is None:
            raise XaikitError("IVPT is not trained: call fit() first or pass checkpoint=")
        return self.model

    def _run(self, pixels: torch.Tensor, until: int | None = None, grad: bool = False):
        model = self._require_model()
        with torch.set_grad_enabled(grad), self.backbone._autocast():
            return model(pixels.to(self.backbone.device), grouping=self.eval_grouping, until=until)

    def explain(self, samples: Sequence[Sample]) -> Explanation:
        """Classify ``samples``; details hold each final concept's importance, presence and keypoint, and the hierarchy links.

        ``scores`` are the logits; a concept's importance is its part score for the predicted
        class divided by the number of parts (the logit is their sum).
        """
        model = self._require_model()
        pixels = self.backbone.preprocess([sample.image for sample in samples])
        output = self._run(pixels)
        logits = output.logits.float()
        predictions = logits.argmax(1)
        part_scores = output.part_scores.float()
        importance = part_scores[torch.arange(len(samples)), predictions] / model.groups  # (B, G)
        final = output.maps[-1].float()[:, :-1]  # (B, G, h, w)
        presence = final.amax(dim=(-2, -1))
        centres = soft_centroids(final, self.backbone.preprocessing.size)
        concept_maps = output.maps[self.concept_layer].float()
        if not self.concept_background:
            concept_maps = concept_maps[:, :-1]
        final = len(self.architecture["prototypes"]) - 1
        names = [self._concept_name(final, k) or f"concept {k + 1}" for k in range(model.groups)]
        details = []
        for row, sample in enumerate(samples):
            keypoints = self.backbone.preprocessing.points_to_image(centres[row].cpu(), sample.size)
            details.append({
                "concepts": [
                    {"name": names[k], "importance": round(float(importance[row, k]), 6),
                     "presence": round(float(presence[row, k]), 6), "keypoint": [round(float(v), 2) for v in keypoints[k]]}
                    for k in range(model.groups)
                ],
                "hierarchy": [_links(weights[row]) for weights in output.grouping],
                "layers": model.layer_names,
            })
        return Explanation(predictions.cpu(), logits.cpu(), concept_maps.cpu(), self.concept_names, details)

    def mean_hierarchy(self, dataset: Dataset) -> list[list[int | None]]:
        """Fine-to-coarse links over ``dataset``: each fine concept's coarse concept, where its mean grouping weight exceeds 0.5."""
        totals: list[torch.Tensor] = []
        for start in range(0, len(dataset), _INFERENCE_BATCH):
            images = [dataset[index].image for index in range(start, min(start + _INFERENCE_BATCH, len(dataset)))]
            grouping = self._run(self.backbone.preprocess(images)).grouping
            sums = [weights.float().sum(0) for weights in grouping]
            totals = sums if not totals else [a + b for a, b in zip(totals, sums, strict=True)]
        return [_links(total / len(dataset)) for total in totals]

    def name_concepts(self, dataset: Dataset) -> list[list[str]]:
        """Name every layer's concepts after the part each hits most often on ``dataset``, and use those names from now on.

        The hit rule is Huang et al.'s (see :mod:`xaikit_ivpt.naming`): a concept hits a visible
        part when the part's keypoint lies in the box around the concept's peak on the image's box
        crop. Concepts that hit no part keep their number (``concept k``).

        Args:
            dataset: samples with part keypoints and bounding boxes (any split of CUB or synthetic-birds).

        Returns:
            Per layer, fine to coarse, the names of its ``prototypes[l] - 1`` foreground concepts.
        """
        self._require_model()

        def layer_maps(images: torch.Tensor) -> list[torch.Tensor]:
            return [maps[:, :-1].float() for maps in self._run(self.backbone.preprocess(images)).maps]

        rates, part_names = part_hit_rates(layer_maps, dataset, tuple(self.backbone.preprocessing.size), batch_size=_INFERENCE_BATCH)
        self.layer_concept_names = {layer: names_from_rates(rate, part_names) for layer, rate in enumerate(rates)}
        return [self.layer_concept_names[layer] for layer in range(len(rates))]

    def _concept_name(self, layer: int, k: int) -> str | None:
        """The given or part-derived name of concept ``k`` of prototype set ``layer``, or ``None``."""
        names = self.layer_concept_names.get(layer)
        return None if names is None else names[k]

    @property
    def concept_names(self) -> list[str]:
        """Names of the :meth:`concept_maps` channels: ``"<layer> <name>"`` (``name`` is ``concept <k>`` unless the concepts were named), then ``background`` if included."""
        count = self.architecture["prototypes"][self.concept_layer]
        layer = layer_names(len(self.backbone.model.blocks), len(self.architecture["prototypes"]))[self.concept_layer]
        names = [f"{layer} {self._concept_name(self.concept_layer, k) or f'concept {k + 1}'}" for k in range(count - 1)]
        return names + ["background"] if self.concept_background else names

    def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Region maps of prototype set :attr:`concept_layer` for RGB images ``(B, 3, H, W)`` in ``[0, 1]``: ``(B, K, h, w)``."""
        pixels = self.backbone.preprocess(images.float())
        maps = torch.cat([
            self._run(chunk, until=self.concept_layer).maps[self.concept_layer].float()
            for chunk in pixels.split(_INFERENCE_BATCH)
        ])
        return maps if self.concept_background else maps[:, :-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable logits ``(B, C)`` for RGB images ``(B, 3, H, W)`` in ``[0, 1]``."""
        return self._run(self.backbone.preprocess(images), grad=True).logits.float()

    def render(self, sample: Sample, detail: Mapping[str, Any]) -> np.ndarray:
        """The region maps of every layer over the image the model saw, the concept importances and the hierarchy."""
        from xaikit_ivpt.figure import draw_ivpt

        pixels = self.backbone.preprocess([sample.image])
        output = self._run(pixels)
        seen = (self.backbone.preprocessing.denormalise(pixels)[0] * 255).round().byte().permute(1, 2, 0).numpy()
        concepts = detail.get("concepts") or []
        prediction = int(output.logits[0].argmax())
        known = self.classes is not None and 0 <= sample.label < len(self.classes)
        return draw_ivpt(
            seen,
            [layer[0].float().cpu().numpy() for layer in output.maps],
            self._require_model().layer_names,
            [concept["importance"] for concept in concepts],
            [concept["name"] for concept in concepts],
            detail.get("hierarchy") or [_links(weights[0]) for weights in output.grouping],
            self._class_name(prediction),
            self._class_name(sample.label) if known else None,
        ).image

    def _class_name(self, index: int) -> str:
        """Class ``index``'s name as a caption shows it, or the index when no classes are known."""
        return readable_class_name(self.classes[index]) if self.classes else str(index)


def _links(weights: torch.Tensor) -> list[int | None]:
    """Grouping weights ``(n - 1, G)`` -> the coarse concept of each fine concept whose weight exceeds 0.5, else ``None``."""
    best, index = weights.float().max(-1)
    return [int(k) if value > 0.5 else None for value, k in zip(best.tolist(), index.tolist(), strict=True)]

