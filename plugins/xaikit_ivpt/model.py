"""The IVPT network: cross-layer concept prototypes and prompts on a frozen timm vision transformer.

Wang, Y. et al., "Exploring Interpretability for Visual Prompt Tuning with Hierarchical Concepts"
(IVPT), 2025; its part-shaping head follows Aniraj, A. et al., "PDiscoFormer", ECCV 2024. The
reference code's behaviour (``../shared/reference/ivpt-and-metrics.md`` section 3) is the default;
each place where the paper says otherwise is an option.

Data flow for ``prototypes = (17, 14, 11, 8, 5)`` on a ViT with ``L`` blocks (``G = 5 - 1 = 4``
prompts, ``N = h * w`` patches, ``T`` = prefix tokens + ``N``)::

    pixels (B, 3, H, W) -> patch embedding + trainable CLS/register tokens and position embedding
    blocks 0 .. L-5 as they are
    for each of the last 4 blocks (l = 0..3, n_l = 17, 14, 11, 8 channels, the last one background):
        f  = final LayerNorm(patch tokens)                         (B, N, D)
        A  = softmax(-||f.detach() - q||^2 + bias)                 (B, N, n_l)     Eq. 5-6
        r  = argmax-masked, A-weighted mean of f per prototype     (B, n_l, D)     Eq. 7
             (from A.detach() and f.detach(), as the reference code pools the prompts' regions)
        w  = Gumbel-softmax(Linear(r_fg)), 1/G where r is empty    (B, n_l - 1, G) grouping
        prompts = Linear(LayerNorm(sum_p w_pk r_p / sum_p w_pk))   (B, G, D)
        tokens  = block(cat(tokens, prompts))[:, :T]               prompts live for one block
    after the last block: f = final LayerNorm, A_final (B, N, 5), r_final (B, 5, D)
        features = LayerNorm([D, 5])(r_final^T)                    (B, D, 5)
        part scores = head(features of the 4 foreground parts)     (B, C, 4)
        logits = mean over parts                                   (B, C)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xaikit.errors import XaikitError
from xaikit.validation import choice_option, flag_option, integer_option, number_option

__all__ = [
    "EMPTY_REGIONS",
    "GROUPINGS",
    "HEADS",
    "INITS",
    "PROMPT_REGIONS",
    "PROTOTYPE_STD",
    "IVPTModel",
    "IVPTOutput",
    "aggregate_regions",
    "check_vit",
    "concept_regions",
    "layer_names",
]

HEADS = ("shared", "per-concept")
"""``shared``: one linear head applied to every part, scores averaged (reference code, default);
``per-concept``: one head per concept (the paper's description)."""
GROUPINGS = ("gumbel", "softmax")
"""How fine concepts are grouped into prompts: Gumbel-softmax (training) or its noiseless softmax."""
EMPTY_REGIONS = ("uniform", "grouping")
"""Grouping weights of a foreground region that no patch wins: ``uniform`` ``1 / G`` (the reference
code's ``masked_fill``, default) or ``grouping``, whatever the grouping layer gives the zero region
feature (the softmax of its bias)."""
PROMPT_REGIONS = ("detached", "attached")
"""The region features pooled into the prompts: from detached maps and tokens (``detached``, the
reference code, default: the prompts' gradient stops at the prompt layers) or ``attached``."""
INITS = ("trunc-normal", "pytorch")
"""Initialisation of the head and the prompt ``Linear``: ``trunc-normal`` (std 0.02, zero bias: the
reference code, default) or ``pytorch`` (``nn.Linear``'s Kaiming-uniform)."""
HEAD_STD = 0.02
"""Standard deviation of the truncated-normal head and prompt-layer initialisation."""
PROTOTYPE_STD = 0.05
"""Prototypes are initialised from N(0, 0.05^2), as in the reference code."""
_EPS = 1e-6


def concept_regions(features: torch.Tensor, prototypes: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Concept Region Discovery (IVPT Eq. 5-6): soft assignment of patches to prototypes.

    Args:
        features: normalised patch tokens ``(B, N, D)``; detach them to keep the maps from moving the tokens.
        prototypes: ``(n, D)``.
        bias: spatial bias per prototype, ``(n, N)``.

    Returns:
        ``(B, N, n)``: ``softmax_n(-||f - q_n||^2 + bias_n)`` at every patch.
    """
    distance = (
        features.pow(2).sum(-1, keepdim=True)
        - 2 * features @ prototypes.t()
        + prototypes.pow(2).sum(-1)
    )
    return torch.softmax(-distance + bias.t(), dim=-1)


def aggregate_regions(regions: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Intra-region Feature Aggregation (IVPT Eq. 7): one feature per prototype.

    Each prototype averages the patches where it is the most probable one, weighted by its
    probability there; a prototype that wins nowhere gets the zero vector.

    Args:
        regions: ``(B, N, n)`` assignment probabilities from :func:`concept_regions`.
        features: ``(B, N, D)`` patch features to pool.

    Returns:
        ``(B, n, D)``.
    """
    winners = F.one_hot(regions.argmax(-1), regions.shape[-1]).to(regions.dtype)
    weights = regions * winners
    pooled = torch.einsum("bnp,bnd->bpd", weights, features)
    return pooled / weights.sum(1).unsqueeze(-1).clamp_min(_EPS)


@dataclass(eq=False)
class IVPTOutput:
    """Everything one forward pass computes.

    Attributes:
        logits: class scores ``(B, C)``: the mean of :attr:`part_scores` over parts.
        part_scores: per foreground part and class, ``(B, C, G)``.
        maps: region maps of every prototype set reached, fine to coarse: ``(B, n_l, h, w)``,
            the last channel background.
        fused: per intermediate layer, its maps grouped into the ``G`` prompts plus background,
            ``(B, G + 1, h, w)`` (for the consistency loss).
        grouping: per intermediate layer, the grouping weights of its foreground concepts, ``(B, n_l - 1, G)``.
        features: final part features after the modulation LayerNorm, ``(B, D, G + 1)``.
    """

    logits: torch.Tensor | None
    part_scores: torch.Tensor | None
    maps: list[torch.Tensor]
    fused: list[torch.Tensor]
    grouping: list[torch.Tensor]
    features: torch.Tensor | None


class IVPTModel(nn.Module):
    """IVPT's trainable parts around a frozen timm ``VisionTransformer``.

    The ViT's blocks, patch embedding and final norm stay frozen and are not submodules (they are
    neither saved with this module nor given to an optimiser); its CLS/register tokens and position
    embedding are copied into trainable parameters.

    Args:
        vit: a timm ``VisionTransformer`` (DINOv2 with registers, DeiT, demo-vit, ...), frozen.
        grid: ``(h, w)`` patch grid of the model input.
        num_classes: ``C``.
        prototypes: prototype count per set, fine to coarse, each including one background
            channel; all but the last sit at the input of the last ``len(prototypes) - 1`` blocks,
            the last after the final block. ``G = prototypes[-1] - 1`` prompts per layer.
        head: one of :data:`HEADS`.
        tau: Gumbel-softmax temperature.
        empty_regions: one of :data:`EMPTY_REGIONS`.
        prompt_regions: one of :data:`PROMPT_REGIONS`.
        train_prompt_norm: train the prompt LayerNorm; the reference code leaves it out of every
            optimiser group, so by default it is frozen at the identity (``requires_grad=False``).
        init: one of :data:`INITS`.

    Raises:
        XaikitError: the ViT is not a timm ``VisionTransformer`` with absolute position embeddings,
            or the prototype counts do not fit it.
    """

    def __init__(
        self,
        vit: nn.Module,
        grid: tuple[int, int],
        num_classes: int,
        prototypes: Sequence[int] = (17, 14, 11, 8, 5),
        head: str = "shared",
        tau: float = 1.0,
        empty_regions: str = "uniform",
        prompt_regions: str = "detached",
        train_prompt_norm: bool = False,
        init: str = "trunc-normal",
    ) -> None:
        super().__init__()
        check_vit(vit)
        counts = [integer_option("prototypes", count, 2) for count in prototypes]
        if not counts:
            raise XaikitError("option prototypes needs at least one count (the final set)")
        if len(counts) - 1 > len(vit.blocks):
            raise XaikitError(f"{len(counts) - 1} intermediate prototype sets need as many blocks, the ViT has {len(vit.blocks)}")
        self.__dict__["vit"] = vit  # frozen and shared with the backbone: deliberately not a submodule
        self.grid = (int(grid[0]), int(grid[1]))
        self.counts = tuple(counts)
        self.head_kind = choice_option("head", head, HEADS)
        self.tau = number_option("tau", tau, 1e-3)
        self.empty_regions = choice_option("empty_regions", empty_regions, EMPTY_REGIONS)
        self.prompt_regions = choice_option("prompt_regions", prompt_regions, PROMPT_REGIONS)
        init = choice_option("init", init, INITS)
        self.num_classes = integer_option("num_classes", num_classes, 1)
        self.first_block = len(vit.blocks) - (len(counts) - 1)
        self.num_prefix = int(vit.num_prefix_tokens)
        patches = self.grid[0] * self.grid[1]
        expected = patches + (0 if vit.no_embed_class else self.num_prefix)
        if vit.pos_embed.shape[1] != expected:
            raise XaikitError(f"the ViT's position embedding covers {vit.pos_embed.shape[1]} tokens, a {self.grid[0]}x{self.grid[1]} grid needs {expected}")
        dim = int(vit.embed_dim)
        groups = self.counts[-1] - 1

        self.cls_token = None if vit.cls_token is None else nn.Parameter(vit.cls_token.detach().clone())
        self.reg_token = None if getattr(vit, "reg_token", None) is None else nn.Parameter(vit.reg_token.detach().clone())
        self.pos_embed = nn.Parameter(vit.pos_embed.detach().clone())
        self.prototypes = nn.ParameterList(nn.Parameter(torch.randn(count, dim) * PROTOTYPE_STD) for count in self.counts)
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(count, *self.grid)) for count in self.counts)
        intermediate = self.counts[:-1]
        self.grouping = nn.ModuleList(nn.Linear(dim, groups) for _ in intermediate)
        self.prompt_norm = nn.ModuleList(nn.LayerNorm([groups, dim]) for _ in intermediate)
        self.prompt_norm.requires_grad_(flag_option("train_prompt_norm", train_prompt_norm))
        self.prompt_linear = nn.ModuleList(nn.Linear(dim, dim) for _ in intermediate)
        self.modulation = nn.LayerNorm([dim, self.counts[-1]])
        shape = (num_classes, dim) if self.head_kind == "shared" else (groups, num_classes, dim)
        self.head = nn.Parameter(torch.empty(shape))
        with torch.no_grad():
            if init == "trunc-normal":
                nn.init.trunc_normal_(self.head, std=HEAD_STD)
                for linear in self.prompt_linear:
                    nn.init.trunc_normal_(linear.weight, std=HEAD_STD)
                    nn.init.zeros_(linear.bias)
            else:
                for matrix in self.head.view(-1, num_classes, dim):
                    nn.init.kaiming_uniform_(matrix, a=5**0.5)  # nn.Linear's default, per head

    # ----------------------------------------------------------------------------- parameters
    @property
    def groups(self) -> int:
        """``G``, the number of prompts per layer and of final foreground concepts."""
        return self.counts[-1] - 1

    @property
    def layer_names(self) -> list[str]:
        """One name per prototype set: the block whose input it reads, then ``final``."""
        return layer_names(len(self.vit.blocks), len(self.counts))

    def parameter_groups(self, lr_tokens: float, lr_head: float) -> list[dict]:
        """Adam parameter groups: tokens, position embedding, prototypes and bias maps at ``lr_tokens``; the other trainable parameters at ``lr_head``."""
        slow = [self.pos_embed, *self.prototypes, *self.bias] + [token for token in (self.cls_token, self.reg_token) if token is not None]
        slow_ids = {id(parameter) for parameter in slow}
        fast = [parameter for parameter in self.parameters() if id(parameter) not in slow_ids and parameter.requires_grad]
        return [{"params": slow, "lr": lr_tokens, "name": "tokens"}, {"params": fast, "lr": lr_head, "name": "head"}]

    # -------------------------------------------------------------------------------- forward
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` input -> tokens ``(B, T, D)`` with the trainable prefix tokens and position embedding."""
        vit = self.vit
        tokens = vit.patch_embed(pixels)
        tokens = tokens.flatten(1, 2) if tokens.ndim == 4 else tokens
        if tokens.shape[1] != self.grid[0] * self.grid[1]:
            raise XaikitError(f"the input gives {tokens.shape[1]} patches, IVPT was built for a {self.grid[0]}x{self.grid[1]} grid")
        prefix = [token.expand(tokens.shape[0], -1, -1) for token in (self.cls_token, self.reg_token) if token is not None]
        if vit.no_embed_class:
            tokens = torch.cat([*prefix, tokens + self.pos_embed], dim=1)
        else:
            tokens = torch.cat([*prefix, tokens], dim=1) + self.pos_embed
        return vit.norm_pre(vit.patch_drop(vit.pos_drop(tokens)))

    def regions(self, tokens: torch.Tensor, layer: int, detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps and region features of prototype set ``layer`` on the patch tokens of ``tokens`` ``(B, T, D)``.

        Args:
            tokens: ``(B, T, D)``.
            layer: the prototype set.
            detach: pool the region features from detached maps and tokens (the prompts' source
                in the reference code), so no gradient flows back through them.

        Returns:
            ``(A, r)``: assignments ``(B, N, n)`` and region features ``(B, n, D)``, pooled from the
            normalised patch tokens.
        """
        normalised = self.vit.norm(tokens[:, self.num_prefix :])
        assignment = concept_regions(normalised.detach(), self.prototypes[layer], self.bias[layer].flatten(1))
        if detach:
            return assignment, aggregate_regions(assignment.detach(), normalised.detach())
        return assignment, aggregate_regions(assignment, normalised)

    def group(self, regions: torch.Tensor, layer: int, grouping: str, empty: torch.Tensor | None = None) -> torch.Tensor:
        """Grouping weights ``(B, n - 1, G)`` of the foreground region features ``(B, n - 1, D)`` into the ``G`` prompts.

        ``empty`` ``(B, n - 1)`` bool marks the regions that no patch wins; with
        ``empty_regions="uniform"`` their weights are ``1 / G``, as in the reference code.
        """
        logits = self.grouping[layer](regions)
        if grouping == "gumbel":
            noise = -torch.log(-torch.log(torch.rand_like(logits).clamp(_EPS, 1 - _EPS)))
            logits = logits + noise
        weights = torch.softmax(logits / self.tau, dim=-1)
        if empty is None or self.empty_regions == "grouping":
            return weights
        return weights.masked_fill(empty.unsqueeze(-1), 1.0 / self.groups)

    def prompts(self, regions: torch.Tensor, weights: torch.Tensor, layer: int) -> torch.Tensor:
        """Fused prompts ``(B, G, D)``: grouping-weighted means of the foreground regions (weights detached), LayerNorm, Linear."""
        detached = weights.detach()
        fused = torch.einsum("bpg,bpd->bgd", detached, regions) / detached.sum(1).unsqueeze(-1).clamp_min(_EPS)
        return self.prompt_linear[layer](self.prompt_norm[layer](fused))

    def forward(self, pixels: torch.Tensor, grouping: str = "softmax", until: int | None = None) -> IVPTOutput:
        """Run IVPT on normalised model input ``(B, 3, H, W)``.

        Args:
            pixels: the backbone's preprocessed input.
            grouping: ``"gumbel"`` (training) or ``"softmax"`` (deterministic, evaluation).
            until: stop once the maps of prototype set ``until`` are computed (logits, part scores
                and features are then ``None``); ``None`` runs the whole network.
        """
        choice_option("grouping", grouping, GROUPINGS)
        tokens = self.embed(pixels)
        for block in self.vit.blocks[: self.first_block]:
            tokens = block(tokens)
        length = tokens.shape[1]
        maps, fused, groupings = [], [], []
        for layer in range(len(self.counts) - 1):
            assignment, regions = self.regions(tokens, layer, detach=self.prompt_regions == "detached")
            maps.append(self._grid(assignment))
            if until == layer:
                return IVPTOutput(None, None, maps, fused, groupings, None)
            empty = F.one_hot(assignment.argmax(-1), assignment.shape[-1]).sum(1)[:, :-1] == 0  # (B, n - 1)
            weights = self.group(regions[:, :-1], layer, grouping, empty)
            groupings.append(weights)
            grouped = torch.einsum("bnp,bpg->bng", assignment[..., :-1], weights)
            fused.append(self._grid(torch.cat([grouped, assignment[..., -1:]], dim=-1)))
            block = self.vit.blocks[self.first_block + layer]
            tokens = block(torch.cat([tokens, self.prompts(regions[:, :-1], weights, layer)], dim=1))[:, :length]
        for block in self.vit.blocks[self.first_block + len(self.counts) - 1 :]:
            tokens = block(tokens)
        assignment, regions = self.regions(tokens, len(self.counts) - 1)
        maps.append(self._grid(assignment))
        features = self.modulation(regions.transpose(1, 2))
        foreground = features[..., :-1]
        if self.head_kind == "shared":
            part_scores = torch.einsum("bdp,cd->bcp", foreground, self.head)
        else:
            part_scores = torch.einsum("bdp,pcd->bcp", foreground, self.head)
        return IVPTOutput(part_scores.mean(-1), part_scores, maps, fused, groupings, features)

    def _grid(self, assignment: torch.Tensor) -> torch.Tensor:
        """``(B, N, n)`` -> ``(B, n, h, w)``."""
        return assignment.transpose(1, 2).reshape(assignment.shape[0], -1, *self.grid)


def layer_names(num_blocks: int, sets: int) -> list[str]:
    """Names of ``sets`` prototype sets on a ViT of ``num_blocks`` blocks: ``block <b>`` (the block whose input it reads), then ``final``."""
    return [f"block {num_blocks - (sets - 1) + index}" for index in range(sets - 1)] + ["final"]


def check_vit(vit: object) -> None:
    """Refuse anything but a timm ``VisionTransformer`` with learned absolute position embeddings.

    Raises:
        XaikitError: naming what was given.
    """
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(vit, VisionTransformer):
        raise XaikitError(
            f"IVPT needs a timm VisionTransformer backbone (timm:<model> or demo-vit), got {type(vit).__name__}"
        )
    if vit.pos_embed is None:
        raise XaikitError("IVPT needs a ViT with absolute position embeddings; this timm model has none")
