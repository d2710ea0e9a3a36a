"""Standard attribution baselines: a linear probe on CLS features, explained by Grad-CAM or Integrated Gradients.

Both explainers classify with a :class:`~xaikit_baselines.probe.LinearProbe` fitted on the frozen
backbone's CLS features, and turn gradient attributions into concept maps, so that the part metrics
(Huang et al.'s consistency and stability, faithfulness, ...) score them exactly as they score KLC
and IVPT. There is one concept per class: concept ``c`` is the attribution map of class ``c``'s
score, on the backbone's patch grid of the model input, ``(B, C, h, w)``, non-negative.

- **Grad-CAM** (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", ICCV 2017), applied to a ViT as is common (pytorch-grad-cam's ViT
  recipe): the activations are the patch tokens at the first LayerNorm of a block (``norm1`` of the
  last block by default: the tokens the last attention reads to form the CLS token); channel weights
  are the gradients of the class score averaged over the patches; the map is
  ``ReLU(sum_d weight_d * token_d)``. The maps of all classes come from one forward pass and one
  backward pass batched over classes (``is_grads_batched``, one one-hot cotangent per class).
- **Integrated Gradients** (Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks",
  ICML 2017), computed by captum's ``IntegratedGradients`` on the model input (after resizing and
  normalisation) from a black or mean-colour baseline; the map is the absolute attribution summed
  over the colour channels and averaged over each patch.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from xaikit.backbones.base import ViTBackbone
from xaikit.errors import MissingDependencyError, XaikitError
from xaikit.features.extract import extract_features
from xaikit.interfaces import Backbone, Capability, Dataset, Explainer
from xaikit.types import Explanation, Sample
from xaikit.validation import choice_option, flag_option, integer_option
from xaikit_baselines.probe import LinearProbe, check_probe_options, fit_probe

__all__ = [
    "BASELINES",
    "IG_METHODS",
    "AttributionExplainer",
    "GradCAM",
    "IntegratedGradients",
    "gradcam_layer",
    "transformer_blocks",
]

BASELINES = ("black", "mean")
"""Integrated-gradients baselines: a black image, or the uniform image of the normalisation mean colour."""
IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
"""captum's integral approximations; ``gausslegendre`` is captum's default."""
_BLOCK_PATHS = ("blocks", "encoder.layer", "transformer.resblocks")
"""Where the transformer blocks live: timm, transformers (DINOv2), open_clip."""
_GRAD_ELEMENTS = 2**27
"""Bound on the elements of the per-class token gradients held at once by Grad-CAM (512 MB in float32)."""


class AttributionExplainer(Explainer):
    """A linear probe on CLS features whose class scores are explained by gradient attributions.

    Subclasses implement :meth:`_class_maps`. Predictions and scores are the probe's logits; concept
    ``c`` is the attribution map of class ``c``, so ``K = C`` and :attr:`concept_names` are the class
    names.

    Args:
        backbone: a registered backbone name or a built :class:`~xaikit.backbones.ViTBackbone`.
        normalize: L2-normalise CLS features before the probe.
        epochs: L-BFGS iterations of the probe fit (full batch).
        lr: L-BFGS step size.
        weight_decay: L2 penalty on the probe weights.
        explain_maps: also put the concept maps of every class into :meth:`explain`'s result.
        device: device of a backbone built from its name.
        batch_size: images per forward pass (and the bound on rows per pass for attributions).
        cache: cache the training features on disk (``extract_features``).
        progress: show a progress bar while extracting the training features.

    Raises:
        XaikitError: an option out of range, or a backbone that is not a ViT.
    """

    capabilities = frozenset({Capability.PREDICTIONS, Capability.CONCEPT_MAPS, Capability.DIFFERENTIABLE})
    name: ClassVar[str] = "attribution"
    """The registered name, used in messages."""

    def __init__(
        self,
        backbone: str | Backbone = "demo-vit",
        *,
        normalize: bool = True,
        epochs: int = 100,
        lr: float = 1.0,
        weight_decay: float = 1e-4,
        explain_maps: bool = True,
        device: str = "auto",
        batch_size: int = 32,
        cache: bool = True,
        progress: bool = False,
    ) -> None:
        from xaikit import get_registry

        check_probe_options(epochs=epochs, lr=lr, weight_decay=weight_decay)
        self.normalize = flag_option("normalize", normalize)
        self.explain_maps = flag_option("explain_maps", explain_maps)
        self.epochs, self.lr, self.weight_decay = epochs, float(lr), float(weight_decay)
        self.batch_size = integer_option("batch_size", batch_size, 1)
        self.cache = flag_option("cache", cache)
        self.progress = progress
        self.backbone = get_registry().build("backbone", backbone, device=device)
        if not isinstance(self.backbone, ViTBackbone):
            raise XaikitError(f"{self.name} needs a ViT backbone, got {type(self.backbone).__name__}")
        self.classes: tuple[str, ...] = ()
        self.probe: LinearProbe | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backbone={self.backbone!r}, fitted={self.probe is not None})"

    # ------------------------------------------------------------------------------------ fitting
    def fit(self, dataset: Dataset) -> AttributionExplainer:
        """Fit the linear probe on the CLS features of ``dataset`` (the training split); returns ``self``."""
        if len(dataset) == 0:
            raise XaikitError(f"{self.name} cannot be fitted on an empty dataset")
        features = extract_features(self.backbone, dataset, batch_size=self.batch_size, cache=self.cache, progress=self.progress)
        labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64)
        self.classes = tuple(str(name) for name in dataset.classes)
        probe = fit_probe(
            features.cls, labels, len(self.classes),
            normalize=self.normalize, epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
        )
        self.probe = probe.to(self.backbone.device)
        return self

    def _fitted(self) -> LinearProbe:
        if self.probe is None:
            raise XaikitError(f"{self.name} is not fitted: call fit(train_dataset) first")
        return self.probe

    # ------------------------------------------------------------------------------ the classifier
    def _logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Probe logits ``(B, C)`` of preprocessed pixels on the backbone's device, with gradients if enabled."""
        return self._fitted()(self.backbone.tokens(pixels).cls)

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """RGB ``(B, 3, H, W)`` in ``[0, 1]`` -> the backbone's model input on its device (differentiable)."""
        return self.backbone.preprocess(images.to(self.backbone.device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Probe logits ``(B, C)`` for RGB images ``(B, 3, H, W)`` float in ``[0, 1]``; differentiable in ``images``."""
        self._fitted()
        return self._logits(self._pixels(images))

    # ------------------------------------------------------------------------------- explanations
    @property
    def concept_names(self) -> Sequence[str] | None:
        """The class names once fitted (concept ``c`` is the attribution map of class ``c``), else ``None``."""
        return self.classes if self.probe is not None else None

    def concept_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Attribution maps of every class, ``(B, C, h, w)`` float, non-negative, on ``images.device``.

        ``images`` are RGB ``(B, 3, H, W)`` in ``[0, 1]``. The maps lie on the backbone's patch grid of
        the model input (the image as the backbone's preprocessing frames it). Gradients are enabled
        inside, so this works under ``torch.no_grad()`` too.
        """
        probe = self._fitted()
        pixels = self._pixels(images)
        maps = [self._all_class_maps(chunk, probe.num_classes) for chunk in pixels.split(self.batch_size)]
        if not maps:
            return torch.zeros(0, probe.num_classes, *self.backbone.grid(pixels), device=images.device)
        return torch.cat(maps).to(images.device)

    def _all_class_maps(self, pixels: torch.Tensor, classes: int) -> torch.Tensor:
        targets = torch.arange(classes, device=pixels.device).expand(pixels.shape[0], classes)
        return self._class_maps(pixels, targets)

    @abstractmethod
    def _class_maps(self, pixels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, T, h, w)`` of the classes ``targets`` ``(B, T)`` for preprocessed ``pixels`` ``(B, 3, S, S)``."""

    def explain(self, samples: Sequence[Sample]) -> Explanation:
        """Classify with the probe; with ``explain_maps``, add every class's attribution map.

        Details per image: ``prediction`` (class index), ``class_name``, ``score`` (its logit) and
        ``probability`` (its softmax probability).
        """
        probe = self._fitted()
        samples = list(samples)
        logits, maps = [], []
        for start in range(0, len(samples), self.batch_size):
            pixels = self.backbone.preprocess([sample.image for sample in samples[start : start + self.batch_size]])
            pixels = pixels.to(self.backbone.device)
            with torch.no_grad():
                logits.append(self._logits(pixels).float().cpu())
            if self.explain_maps:
                maps.append(self._all_class_maps(pixels, probe.num_classes).detach().cpu())
        scores = torch.cat(logits) if logits else torch.zeros(0, probe.num_classes)
        predictions = scores.argmax(dim=1) if len(scores) else torch.zeros(0, dtype=torch.int64)
        probabilities = scores.softmax(dim=1)
        details = [
            {"prediction": int(p), "class_name": self.classes[int(p)], "score": float(scores[i, p]), "probability": float(probabilities[i, p])}
            for i, p in enumerate(predictions.tolist())
        ]
        return Explanation(
            predictions=predictions,
            scores=scores,
            concept_maps=torch.cat(maps) if maps else None,
            concept_names=self.classes if maps else None,
            details=details,
        )

    def render(self, sample: Sample, detail: dict[str, Any]) -> np.ndarray:
        """The model input beside it overlaid with the attribution map of the predicted class.

        Returns:
            RGB ``(S', 2 S' + 8, 3)`` ``uint8`` with ``S' = max(S, 224)``, ``S`` the model input side.
        """
        self._fitted()
        pixels = self.backbone.preprocess([sample.image]).to(self.backbone.device)
        target = int(detail.get("prediction", -1))
        if not 0 <= target < len(self.classes):
            with torch.no_grad():
                target = int(self._logits(pixels).argmax(dim=1)[0])
        heat = self._class_maps(pixels, torch.tensor([[target]], device=pixels.device)).detach().float().cpu()  # (1, 1, h, w)
        image = self.backbone.preprocessing.denormalise(pixels.detach().float().cpu())
        side = max(224, *image.shape[-2:])
        size = (round(image.shape[-2] * side / max(image.shape[-2:])), round(image.shape[-1] * side / max(image.shape[-2:])))
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)[0]
        heat = F.interpolate(heat, size=size, mode="bilinear", align_corners=False)[0, 0]
        heat = heat / heat.max() if heat.max() > 0 else heat
        colour = torch.stack([(3 * heat).clamp(0, 1), (3 * heat - 1).clamp(0, 1), (3 * heat - 2).clamp(0, 1)])  # "hot"
        overlay = 0.45 * image + 0.55 * colour
        gap = torch.ones(3, size[0], 8)
        figure = torch.cat([image, gap, overlay], dim=2)
        return (figure.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


# -------------------------------------------------------------------------------------- Grad-CAM
def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList | torch.nn.Sequential:
    """The transformer blocks of a ViT: ``blocks`` (timm), ``encoder.layer`` (transformers), ``transformer.resblocks`` (open_clip).

    Raises:
        XaikitError: when none of them is a non-empty module list.
    """
    for path in _BLOCK_PATHS:
        found: Any = model
        for name in path.split("."):
            found = getattr(found, name, None)
        if isinstance(found, torch.nn.ModuleList | torch.nn.Sequential) and len(found):
            return found
    raise XaikitError(
        f"gradcam cannot find the transformer blocks of {type(model).__name__} (looked for {', '.join(_BLOCK_PATHS)})"
    )


def gradcam_layer(model: torch.nn.Module, block: int) -> torch.nn.Module:
    """The first LayerNorm of block ``block`` (negative from the end): timm ``norm1``, transformers ``norm1``, open_clip ``ln_1``.

    Raises:
        XaikitError: the block does not exist or has no LayerNorm.
    """
    blocks = transformer_blocks(model)
    if not -len(blocks) <= block < len(blocks):
        raise XaikitError(f"option block {block} does not exist: the backbone has blocks 0..{len(blocks) - 1} (or -1..-{len(blocks)})")
    for module in blocks[block].modules():
        if isinstance(module, torch.nn.LayerNorm):
            return module
    raise XaikitError(f"block {block} of {type(model).__name__} has no LayerNorm for gradcam to read")


def _batched_vjp(output: torch.Tensor, inputs: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """``(T, *output.shape)`` cotangents -> ``(T, *inputs.shape)`` vector-Jacobian products, the graph kept."""
    try:
        (grads,) = torch.autograd.grad(output, inputs, grad_outputs=cotangents, retain_graph=True, is_grads_batched=True)
        return grads
    except torch.OutOfMemoryError:
        raise
    except RuntimeError:  # an op without a batching rule: one backward pass per cotangent
        return torch.stack([torch.autograd.grad(output, inputs, grad_outputs=c, retain_graph=True)[0] for c in cotangents])


class GradCAM(AttributionExplainer):
    """Grad-CAM (Selvaraju et al., ICCV 2017) of a linear probe on CLS features, on the ViT's patch tokens.

    Activations are the patch tokens at the first LayerNorm of ``block`` (``norm1`` of the last block
    by default); class ``c``'s channel weights are the gradients of its logit averaged over the patches;
    its map is ``ReLU(tokens @ weights)`` on the patch grid. All classes share one forward pass.

    Args:
        backbone, normalize, epochs, lr, weight_decay, device, batch_size, cache, progress: as for
            :class:`AttributionExplainer`.
        block: the block whose LayerNorm input tokens are explained (negative from the end).
        explain_maps: also return every class's map from :meth:`explain` (cheap: one batched backward).
    """

    name = "gradcam"

    def __init__(
        self,
        backbone: str | Backbone = "demo-vit",
        *,
        block: int = -1,
        normalize: bool = True,
        epochs: int = 100,
        lr: float = 1.0,
        weight_decay: float = 1e-4,
        explain_maps: bool = True,
        device: str = "auto",
        batch_size: int = 32,
        cache: bool = True,
        progress: bool = False,
    ) -> None:
        if isinstance(block, bool) or not isinstance(block, int):
            raise XaikitError(f"option block must be an integer block index, got {block!r}")
        super().__init__(
            backbone, normalize=normalize, epochs=epochs, lr=lr, weight_decay=weight_decay, explain_maps=explain_maps,
            device=device, batch_size=batch_size, cache=cache, progress=progress,
        )
        self.block = block
        self.layer = gradcam_layer(self.backbone.model, block)
        transformer = getattr(self.backbone.model, "transformer", None)
        self._sequence_first = transformer is not None and getattr(transformer, "batch_first", True) is False

    def _tokens_first(self, tensor: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
        """The captured activations (or their gradients) as ``(..., B, N, D)``."""
        rows, cols = tensor.shape[-3], tensor.shape[-2]
        if (rows, cols) == (batch, tokens) and not (batch == tokens and self._sequence_first):
            return tensor
        if (rows, cols) == (tokens, batch):
            return tensor.transpose(-3, -2)
        raise XaikitError(f"gradcam read activations of shape {tuple(tensor.shape)}, expected {batch} images x {tokens} tokens")

    def _class_maps(self, pixels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        batch, count = targets.shape
        grid = self.backbone.grid(pixels)
        prefix = self.backbone.num_prefix_tokens
        captured: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            with torch.enable_grad():
                logits = self._logits(pixels.detach().requires_grad_(True))
        finally:
            handle.remove()
        if not captured:
            raise XaikitError(f"gradcam's layer was not run by the backbone's forward pass (block {self.block})")
        activations = captured[-1]
        tokens = prefix + grid[0] * grid[1]
        chunk = max(1, _GRAD_ELEMENTS // activations.numel())
        weights = []
        for start in range(0, count, chunk):
            cotangents = F.one_hot(targets[:, start : start + chunk].T, logits.shape[1]).to(logits.dtype)  # (t, B, C)
            grads = self._tokens_first(_batched_vjp(logits, activations, cotangents), batch, tokens)  # (t, B, N, D)
            weights.append(grads[:, :, prefix:].mean(dim=2))  # (t, B, D)
        patches = self._tokens_first(activations.detach(), batch, tokens)[:, prefix:].float()  # (B, h*w, D)
        alpha = torch.cat(weights).transpose(0, 1).float()  # (B, T, D)
        cam = torch.einsum("btd,bnd->btn", alpha, patches).relu()
        return cam.reshape(batch, count, *grid)


# ------------------------------------------------------------------------------ integrated gradients
class IntegratedGradients(AttributionExplainer):
    """Integrated Gradients (Sundararajan et al., ICML 2017) of a linear probe on CLS features, via captum.

    Attributions are taken on the model input (resized and normalised pixels) from ``baseline``
    with ``steps`` points of captum's ``method``; a class's map is the absolute attribution summed over
    the colour channels and averaged over each patch. Every class costs ``steps`` forward and backward
    passes per image.

    Args:
        backbone, normalize, epochs, lr, weight_decay, device, batch_size, cache, progress: as for
            :class:`AttributionExplainer`; ``batch_size`` also bounds the rows captum sends through
            the model at once.
        steps: points of the path integral (captum's ``n_steps``).
        baseline: ``"black"`` (a black image) or ``"mean"`` (the normalisation mean colour, a zero
            model input).
        method: captum's approximation: ``gausslegendre`` (default) or a Riemann sum
            (``riemann_left``, ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid``).
        explain_maps: also return every class's map from :meth:`explain`; off by default because it
            costs ``C x steps`` passes per image and ``xaikit bench`` keeps only the predictions.

    Raises:
        MissingDependencyError: captum is not installed.
        XaikitError: an option out of range.
    """

    name = "integrated-gradients"

    def __init__(
        self,
        backbone: str | Backbone = "demo-vit",
        *,
        steps: int = 32,
        baseline: str = "black",
        method: str = "gausslegendre",
        normalize: bool = True,
        epochs: int = 100,
        lr: float = 1.0,
        weight_decay: float = 1e-4,
        explain_maps: bool = False,
        device: str = "auto",
        batch_size: int = 32,
        cache: bool = True,
        progress: bool = False,
    ) -> None:
        self.steps = integer_option("steps", steps, 1 if method != "riemann_trapezoid" else 2)
        self.baseline = choice_option("baseline", baseline, BASELINES)
        self.integration = choice_option("integration method", method, IG_METHODS)
        try:
            from captum.attr import IntegratedGradients as CaptumIG
        except ImportError:
            raise MissingDependencyError("explainer 'integrated-gradients' needs captum: pip install 'xaikit[captum]'") from None
        super().__init__(
            backbone, normalize=normalize, epochs=epochs, lr=lr, weight_decay=weight_decay, explain_maps=explain_maps,
            device=device, batch_size=batch_size, cache=cache, progress=progress,
        )
        self._ig = CaptumIG(self._logits)

    def baselines(self, pixels: torch.Tensor) -> torch.Tensor:
        """The baseline model input for preprocessed ``pixels`` ``(B, 3, S, S)``."""
        if self.baseline == "mean":
            return torch.zeros_like(pixels)
        preprocessing = self.backbone.preprocessing
        mean = torch.tensor(preprocessing.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(preprocessing.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return ((0 - mean) / std).expand_as(pixels).contiguous()

    def attribute(self, images: torch.Tensor, target: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """captum's Integrated Gradients of one class score per image, on the model input.

        Args:
            images: RGB ``(B, 3, H, W)`` float in ``[0, 1]``.
            target: the class explained per image, ``(B,)`` ``int64`` or one int for all.

        Returns:
            Attributions ``(B, 3, S, S)`` on the backbone's device, and captum's convergence delta
            ``(B,)``: the attributions' sum minus ``score(input) - score(baseline)``.
        """
        self._fitted()
        pixels = self._pixels(images).detach()
        target = torch.as_tensor(target, dtype=torch.int64, device=pixels.device).expand(pixels.shape[0])
        chunks = list(self._integrate(pixels, torch.arange(pixels.shape[0], device=pixels.device), target))
        return torch.cat([attribution for attribution, _ in chunks]), torch.cat([delta for _, delta in chunks])

    def _integrate(self, pixels: torch.Tensor, rows: torch.Tensor, target: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Attributions and deltas of ``target[i]`` for image ``pixels[rows[i]]``, a few rows per captum call.

        Each call explains ``max(1, batch_size // steps)`` rows; captum sends at most ``batch_size``
        scaled inputs (at least two steps of them) through the model at once.
        """
        per_call = max(1, self.batch_size // self.steps)
        pixels = pixels.detach()
        with torch.enable_grad():
            for start in range(0, len(rows), per_call):
                inputs = pixels[rows[start : start + per_call]]
                attribution, delta = self._ig.attribute(
                    inputs, baselines=self.baselines(inputs), target=target[start : start + per_call].tolist(), n_steps=self.steps,
                    method=self.integration, internal_batch_size=self.batch_size, return_convergence_delta=True,
                )
                yield attribution.detach(), delta.detach()

    def _class_maps(self, pixels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        batch, count = targets.shape
        grid = self.backbone.grid(pixels)
        rows = torch.arange(batch, device=pixels.device).repeat_interleave(count)
        maps = [
            F.adaptive_avg_pool2d(attribution.abs().sum(dim=1, keepdim=True).float(), grid)[:, 0]  # (n, h, w)
            for attribution, _ in self._integrate(pixels, rows, targets.reshape(-1))
        ]
        return torch.cat(maps).reshape(batch, count, *grid)
