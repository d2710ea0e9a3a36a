"""IVPT's training step and inference against plain deep visual prompt tuning, on the same frozen ViT and images.

Usage::

    python benchmarks/ivpt_overhead.py [--backbone demo-vit] [--option KEY=VALUE ...] [--batch-size 16]
        [--classes 200] [--prompts 4] [--warmup 2] [--steps 5] [--rounds 5] [--device auto]
        [--out-json benchmarks/results/ivpt_overhead.json]

In one run, on the same frozen backbone and the same batch (random normalised pixels at the
backbone's input size from a seeded generator, random labels in ``[0, classes)``):

* ``deep VPT``: VPT-Deep (Jia, M. et al., "Visual Prompt Tuning", ECCV 2022), :class:`DeepVPT`:
  ``--prompts`` learnable tokens per block, inserted after the prefix tokens and replaced at every
  block, the frozen blocks, the final norm and a linear head on the pooled token; cross-entropy;
* ``ivpt (CE only)``: :class:`~xaikit_ivpt.model.IVPTModel` (prototypes 17, 14, 11, 8, 5, shared
  head, Gumbel grouping) trained on cross-entropy alone: the architecture's overhead, which the
  paper (Wang, Y. et al., "Exploring Interpretability for Visual Prompt Tuning with Hierarchical
  Concepts", 2025) puts at +4.8 % of training time over deep VPT;
* ``ivpt (all losses)``: the full recipe, every term of :class:`~xaikit_ivpt.losses.LossWeights`
  at weight 1. Its equivariance term sends the batch and its affine transform (one fixed
  ``random_affine`` draw) through the network in one pass, so this step sees twice the images.

A training step is the same for all three: forward, loss, ``zero_grad``, backward, gradient-norm
clipping at 2.0 (IVPT's recipe) and an Adam step (IVPT: its two parameter groups at 2e-4 and 1e-2;
deep VPT: prompts and head at 1e-2). Inference is one forward pass of the batch under
``torch.no_grad()`` (IVPT with the noiseless ``softmax`` grouping; the paper puts its overhead at
+5.2 %). Both IVPT variants infer alike, so inference has two rows.

Every timed function runs ``--warmup`` times first; then the functions alternate in
``--rounds`` rounds (train deep VPT, train IVPT CE only, train IVPT all losses, infer deep VPT,
infer IVPT, then again), each timed over ``--steps`` consecutive calls, and the best round of each
counts (alternating keeps them under the same machine load). Times per image divide by
``--batch-size``, also for the doubled equivariance pass. The overhead of a method is its time over
deep VPT's, minus 1. On CUDA the peak allocated memory of one more call of each is recorded.
Before timing, a forward pre-hook on every block counts the blocks one forward pass of each model
runs; a model that skips some is named in a warning, as its times then leave that work out.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

import xaikit
from xaikit.cli.options import parse_options
from xaikit_ivpt.geometry import random_affine
from xaikit_ivpt.losses import LossWeights
from xaikit_ivpt.model import IVPTModel, check_vit
from xaikit_ivpt.objective import loss_terms

PROTOTYPES = (17, 14, 11, 8, 5)
LR_TOKENS, LR_HEAD, CLIP = 2e-4, 1e-2, 2.0
PAPER = {"train_overhead": 0.048, "inference_overhead": 0.052}
CE_ONLY = LossWeights(consistency=0, presence=0, background=0, equivariance=0, entropy=0, tv=0, orthogonality=0)
TRAIN = ("deep VPT", "ivpt (CE only)", "ivpt (all losses)")
INFER = ("deep VPT", "ivpt")


class DeepVPT(nn.Module):
    """VPT-Deep (Jia et al., ECCV 2022) on a frozen timm ``VisionTransformer``.

    Every block gets its own ``num_prompts`` learnable tokens, placed after the prefix (CLS and
    register) tokens: the sequence a block sees is ``prefix + prompts + patches``. A block's
    outputs at the prompt positions are dropped and the next block's prompts take their place, as
    in the VPT code. After the last block: the ViT's final norm, its pooling (mean of the patch
    tokens for ``global_pool="avg"``, else the CLS token), its ``fc_norm`` and a new linear head.
    The prompts are initialised uniformly in ``+-sqrt(6 / (3 * patch_area + dim))`` like VPT's.
    Prompts carry no position embedding; the ViT's own CLS/register tokens and position embedding
    stay frozen. The ViT is not a submodule (it is neither saved nor given to an optimiser).

    Args:
        vit: a timm ``VisionTransformer``, frozen.
        num_classes: ``C``.
        num_prompts: prompt tokens per block (4 matches IVPT's ``G = 5 - 1`` prompts per layer).
    """

    def __init__(self, vit: nn.Module, num_classes: int, num_prompts: int = 4) -> None:
        super().__init__()
        check_vit(vit)
        self.__dict__["vit"] = vit
        dim = int(vit.embed_dim)
        height, width = vit.patch_embed.patch_size
        bound = math.sqrt(6.0 / (3 * height * width + dim))
        self.prompts = nn.Parameter(torch.empty(len(vit.blocks), num_prompts, dim).uniform_(-bound, bound))
        self.head = nn.Linear(dim, num_classes)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` input -> tokens ``(B, prefix + N, D)`` with the ViT's frozen prefix tokens and position embedding."""
        vit = self.vit
        tokens = vit.patch_embed(pixels)
        tokens = tokens.flatten(1, 2) if tokens.ndim == 4 else tokens
        prefix = [token.expand(len(tokens), -1, -1) for token in (vit.cls_token, getattr(vit, "reg_token", None)) if token is not None]
        if vit.no_embed_class:
            tokens = torch.cat([*prefix, tokens + vit.pos_embed], dim=1)
        else:
            tokens = torch.cat([*prefix, tokens], dim=1) + vit.pos_embed
        return vit.norm_pre(vit.patch_drop(vit.pos_drop(tokens)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, C)`` of normalised model input ``(B, 3, H, W)``."""
        vit, prefix = self.vit, int(self.vit.num_prefix_tokens)
        tokens = self.embed(pixels)
        skip = prefix  # where the patches start: no prompts before the first block
        for block, prompts in zip(vit.blocks, self.prompts, strict=True):
            tokens = torch.cat([tokens[:, :prefix], prompts.expand(len(tokens), -1, -1), tokens[:, skip:]], dim=1)
            tokens = block(tokens)
            skip = prefix + prompts.shape[0]
        tokens = vit.norm(torch.cat([tokens[:, :prefix], tokens[:, skip:]], dim=1))
        pooled = tokens[:, prefix:].mean(1) if vit.global_pool == "avg" else tokens[:, 0]
        return self.head(vit.fc_norm(pooled))


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """One optimiser step of ``model``: ``loss()``, ``zero_grad``, backward, clipping at ``CLIP``, Adam."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]

    def step() -> None:
        total = loss()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(parameters, CLIP)
        optimizer.step()

    return step


def interleaved(functions: dict[str, Callable[[], None]], warmup: int, steps: int, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each function in each round: ``steps`` calls per round, the functions alternating, after ``warmup`` calls each."""

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for function in functions.values():
        for _ in range(warmup):
            function()
    synchronize()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(steps):
                function()
            synchronize()
            seconds[name].append((time.perf_counter() - start) / steps)
    return seconds


def peak_memory(functions: dict[str, Callable[[], None]], device: torch.device) -> dict[str, float] | None:
    """MiB of ``torch.cuda.max_memory_allocated`` during one more call of each function (``None`` off CUDA)."""
    if device.type != "cuda":
        return None
    peaks = {}
    for name, function in functions.items():
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        function()
        torch.cuda.synchronize(device)
        peaks[name] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peaks


def blocks_run(model: Callable[[torch.Tensor], object], vit: nn.Module, pixels: torch.Tensor) -> int:
    """How many of the ViT's blocks one forward pass of ``model`` on ``pixels`` runs (a forward pre-hook on each)."""
    calls: list[int] = []
    hooks = [block.register_forward_pre_hook(lambda *_: calls.append(1)) for block in vit.blocks]
    try:
        with torch.no_grad():
            model(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    return len(calls)


def percent(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.1f} %"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="demo-vit")
    parser.add_argument("--option", action="append", default=[], help="backbone option KEY=VALUE, repeatable")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default 16, IVPT's reference batch)")
    parser.add_argument("--classes", type=int, default=200, help="classes of the heads (default 200, CUB's)")
    parser.add_argument("--prompts", type=int, default=4, help="deep VPT's prompt tokens per block (default 4, IVPT's per layer)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each function first (default 2)")
    parser.add_argument("--steps", type=int, default=5, help="calls of each function per round (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best counts (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--out-json", type=Path, default=Path(__file__).parent / "results" / "ivpt_overhead.json")
    args = parser.parse_args(argv)
    command = " ".join(["python", "benchmarks/ivpt_overhead.py", *(sys.argv[1:] if argv is None else argv)])

    backbone = xaikit.create("backbone", args.backbone, device=args.device, **parse_options(args.option))
    device, size = backbone.device, tuple(backbone.preprocessing.size)
    vit = backbone.model.eval().requires_grad_(False)
    grid = backbone.grid(torch.empty(1, 3, *size))
    generator = torch.Generator().manual_seed(args.seed)
    pixels = torch.randn(args.batch_size, 3, *size, generator=generator).to(device)
    labels = torch.randint(args.classes, (args.batch_size,), generator=generator).to(device)
    affine = random_affine(torch.Generator().manual_seed(args.seed))

    torch.manual_seed(args.seed)
    vpt = DeepVPT(vit, args.classes, args.prompts).to(device)
    ivpt = {name: IVPTModel(vit, grid, args.classes, prototypes=PROTOTYPES, head="shared").to(device) for name in TRAIN[1:]}
    recipes = {"ivpt (CE only)": CE_ONLY, "ivpt (all losses)": LossWeights()}

    def ivpt_loss(name: str) -> Callable[[], torch.Tensor]:
        return lambda: recipes[name].total(loss_terms(ivpt[name], pixels, labels, recipes[name], affine, grouping="gumbel"))

    train = {"deep VPT": training_step(vpt, torch.optim.Adam(vpt.parameters(), lr=LR_HEAD), lambda: F.cross_entropy(vpt(pixels), labels))}
    for name in TRAIN[1:]:
        train[name] = training_step(ivpt[name], torch.optim.Adam(ivpt[name].parameter_groups(LR_TOKENS, LR_HEAD)), ivpt_loss(name))

    @torch.no_grad()
    def infer_vpt() -> None:
        vpt(pixels)

    @torch.no_grad()
    def infer_ivpt() -> None:
        ivpt["ivpt (CE only)"](pixels, grouping="softmax")

    ran = {"deep VPT": blocks_run(vpt, vit, pixels[:1]), "ivpt": blocks_run(ivpt["ivpt (CE only)"], vit, pixels[:1])}
    functions = {**{f"train {name}": step for name, step in train.items()}, "infer deep VPT": infer_vpt, "infer ivpt": infer_ivpt}
    seconds = interleaved(functions, args.warmup, args.steps, args.rounds, device)
    best = {name: min(values) for name, values in seconds.items()}
    peaks = peak_memory(functions, device)

    def row(kind: str, name: str, baseline: str) -> dict:
        key = f"{kind} {name}"
        figures = {
            "ms_per_step": round(1000 * best[key], 3),
            "ms_per_image": round(1000 * best[key] / args.batch_size, 3),
            "over_deep_vpt": round(best[key] / best[f"{kind} {baseline}"], 4),
            "overhead": round(best[key] / best[f"{kind} {baseline}"] - 1, 4),
            "rounds_ms_per_step": [round(1000 * value, 3) for value in seconds[key]],
        }
        if peaks is not None:
            figures["peak_cuda_mib"] = peaks[key]
        return figures

    trainable = {"deep VPT": vpt, **ivpt}
    report = {
        "benchmark": "ivpt_overhead",
        "command": command,
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "threads": torch.get_num_threads(), "device": str(device),
            "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "backbone": args.backbone,
        "options": parse_options(args.option),
        "input": list(size),
        "grid": list(grid),
        "blocks": len(vit.blocks),
        "batch_size": args.batch_size,
        "classes": args.classes,
        "prompts_per_block": args.prompts,
        "prototypes": list(PROTOTYPES),
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
        "blocks_run": ran,
        "trainable_parameters": {name: sum(p.numel() for p in model.parameters() if p.requires_grad) for name, model in trainable.items()},
        "train": {name: row("train", name, "deep VPT") for name in TRAIN},
        "inference": {name: row("infer", name, "deep VPT") for name in INFER},
        "paper": PAPER,
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(report, indent=2) + "\n")

    memory = peaks is not None
    print(f"{args.backbone}, {size[0]}x{size[1]} input, {len(vit.blocks)} blocks, batch {args.batch_size}, {args.classes} classes, "
          f"device {device} ({torch.get_num_threads()} threads); best of {args.rounds} rounds x {args.steps} steps")
    print(f"{'':<18} {'trainable':>10} {'train ms/step':>14} {'ms/image':>9} {'vs deep VPT':>12}" + (f" {'peak MiB':>9}" if memory else ""))
    for name in TRAIN:
        figures = report["train"][name]
        print(f"{name:<18} {report['trainable_parameters'][name]:>10,} {figures['ms_per_step']:>14.1f} {figures['ms_per_image']:>9.2f} "
              f"{percent(figures['over_deep_vpt']):>12}" + (f" {figures['peak_cuda_mib']:>9.1f}" if memory else ""))
    print(f"{'':<18} {'':>10} {'infer ms/batch':>14} {'ms/image':>9} {'vs deep VPT':>12}" + (f" {'peak MiB':>9}" if memory else ""))
    for name in INFER:
        figures = report["inference"][name]
        print(f"{name:<18} {'':>10} {figures['ms_per_step']:>14.1f} {figures['ms_per_image']:>9.2f} "
              f"{percent(figures['over_deep_vpt']):>12}" + (f" {figures['peak_cuda_mib']:>9.1f}" if memory else ""))
    train_ce, train_all = report["train"]["ivpt (CE only)"]["over_deep_vpt"], report["train"]["ivpt (all losses)"]["over_deep_vpt"]
    print(f"IVPT over deep VPT ({args.prompts} prompts per block): training {percent(train_ce)} with CE only "
          f"(paper {percent(1 + PAPER['train_overhead'])}), {percent(train_all)} with all losses (doubled equivariance batch); "
          f"inference {percent(report['inference']['ivpt']['over_deep_vpt'])} (paper {percent(1 + PAPER['inference_overhead'])})")
    for name, count in ran.items():
        if count != len(vit.blocks):
            print(f"warning: {name} ran {count} of the {len(vit.blocks)} blocks per forward pass, so its times leave out "
                  f"{len(vit.blocks) - count} block(s) of work and the comparison is not like for like")
    print(f"wrote {args.out_json}")
    return report


if __name__ == "__main__":
    main()
