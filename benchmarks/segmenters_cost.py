"""Cost of the detectron2 segmenters: VLPart and SAN per image at two test sizes, batched vs one at a time, and KLC's stages.

Usage::

    python benchmarks/segmenters_cost.py [--images 2] [--sizes 320 480] [--rounds 1] [--queries 2] [--klc-classes 3]
        [--backbone demo-vit] [--data-root ../shared/data/cub200-mini] [--vlpart-source DIR] [--san-source DIR]
        [--device cpu] [--out-json benchmarks/results/segmenters_cost.json]

No weights are downloaded: the real architectures get seeded random checkpoints in each project's
own format, made and loaded as the integration tier does (``tests/integration/seeded.py``):
VLPart's R50 Pascal-Part Mask R-CNN and SAN's CLIP ViT-B/16. The checkouts default to the
extracted ``../shared/vendor`` snapshots. In one run, on the first ``--images`` test photographs
of cub200-mini:

* ``segmenters``: for each of ``vlpart`` and ``san`` and each ``--sizes`` value (the adapter's
  ``min_size_test``), seconds per image of ``segment(images)`` with ``batch_size = --images`` (one
  forward pass for all) and with ``batch_size = 1``, alternating the two over ``--rounds`` rounds
  after one warm-up image, best round of each. ``vlpart`` uses its built-in Pascal-Part classifier
  and default thresholds; ``san`` the bird vocabulary with ``augment="none"`` (COCO's augmentation
  names would add a CLIP text pass over about 170 names per forward).
* ``klc``: ``KLC.explain`` on ``--queries`` test images with ``vlpart`` at the first size (the bird
  vocabulary with random unit text embeddings, so that random weights still give parts to match),
  fitted on one training image of each of the first ``--klc-classes`` classes, feature cache off.
  Its time is split by timers wrapped around the explainer's calls, without changing KLC: the
  backbone (``extract_features``: preprocessing and forward pass), the segmenter (``segment``),
  part pooling (``describe``), matching (the matcher's ``match``), voting (the rest of KLC's
  per-query decision: label agreement, soft vote, the JSON details) and the remainder (retrieval).

Random weights decide how many instances VLPart's heads keep, so absolute times with released
weights will differ; the ratios between sizes and batch sizes are what this measures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import xaikit
from xaikit.data.cub import CUBDataset
from xaikit.data.subset import Subset
from xaikit.types import Sample
from xaikit_segmenters.vocabulary import BIRD_VOCABULARY

ROOT = Path(__file__).resolve().parents[1]
SEEDED_PATH = ROOT / "tests" / "integration" / "seeded.py"
CUB_MINI = ROOT.parent / "shared" / "data" / "cub200-mini"
STAGES = ("backbone", "segmenter", "pooling", "matching", "voting", "other")


def seeded() -> ModuleType:
    """``tests/integration/seeded.py``, loaded by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("xaikit_tests_seeded", SEEDED_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alternating(functions: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Best wall time of each function over ``rounds`` rounds that call every function in turn (same load for all)."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def segmenter_cost(segmenter: Any, samples: Sequence[Sample], rounds: int) -> dict[str, float]:
    """Seconds per image of ``segmenter.segment(samples)`` batched (all in one forward) and one image per forward."""
    segmenter.batch_size = 1
    segmenter.segment(samples[:1])  # warm-up: thread pools, first-call allocations

    def with_batch(size: int) -> Callable[[], None]:
        def run() -> None:
            segmenter.batch_size = size
            segmenter.segment(samples)
        return run

    best = alternating({"batched": with_batch(len(samples)), "single": with_batch(1)}, rounds)
    batched, single = best["batched"] / len(samples), best["single"] / len(samples)
    return {"batched_s_per_image": round(batched, 3), "single_s_per_image": round(single, 3), "single_over_batched": round(single / batched, 3)}


@contextlib.contextmanager
def timed(owner: object, attribute: str, totals: dict[str, float], stage: str) -> Iterator[None]:
    """Within the block, every call of ``owner.attribute`` adds its wall time to ``totals[stage]``."""
    own = vars(owner).get(attribute)
    original = getattr(owner, attribute)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[stage] += time.perf_counter() - start

    setattr(owner, attribute, wrapper)
    try:
        yield
    finally:
        if own is None:
            delattr(owner, attribute)
        else:
            setattr(owner, attribute, own)


def klc_stages(klc: Any, queries: Sequence[Sample]) -> dict[str, float]:
    """Seconds per query of ``klc.explain(queries)`` in total and per stage (see the module's docstring)."""
    explainer = importlib.import_module(type(klc).__module__)
    totals = dict.fromkeys(["backbone", "segmenter", "pooling", "matching", "decide"], 0.0)
    with contextlib.ExitStack() as stack:
        for owner, attribute, stage in (
            (explainer, "extract_features", "backbone"), (klc.segmenter, "segment", "segmenter"),
            (explainer, "describe", "pooling"), (klc.matcher, "match", "matching"), (klc, "_decide", "decide"),
        ):
            stack.enter_context(timed(owner, attribute, totals, stage))
        start = time.perf_counter()
        klc.explain(queries)
        total = time.perf_counter() - start
    seconds = {
        "backbone": totals["backbone"], "segmenter": totals["segmenter"], "pooling": totals["pooling"],
        "matching": totals["matching"], "voting": totals["decide"] - totals["matching"],
    }
    seconds["other"] = total - sum(seconds.values())
    return {
        "s_per_query": round(total / len(queries), 3),
        "stages_s_per_query": {stage: round(value / len(queries), 4) for stage, value in seconds.items()},
        "stages_share": {stage: round(value / total, 4) for stage, value in seconds.items()},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the arguments, run the benchmark in a scratch folder for the checkpoints, write the JSON report and return it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2, help="test images timed per segmenter and size (the batch)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 480], help="min_size_test values")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--queries", type=int, default=2, help="KLC queries")
    parser.add_argument("--klc-classes", type=int, default=3, help="classes in KLC's gallery, one prototype each")
    parser.add_argument("--backbone", default="demo-vit", help="KLC's backbone")
    parser.add_argument("--segmenters", nargs="+", default=["vlpart", "san"], choices=["vlpart", "san"])
    parser.add_argument("--data-root", type=Path, default=CUB_MINI)
    parser.add_argument("--vlpart-source", type=Path, help="a VLPart checkout (default: the extracted vendor snapshot)")
    parser.add_argument("--san-source", type=Path, help="a SAN checkout (default: the extracted vendor snapshot)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-json", type=Path, default=Path(__file__).parent / "results" / "segmenters_cost.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="segmenters-cost-") as scratch:
        report = measure(args, Path(scratch))
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Every figure of the report; the random checkpoints are written to ``scratch``."""
    helpers = seeded()
    test = CUBDataset(args.data_root, split="test")
    samples = [test[index] for index in range(args.images)]
    sources = {"vlpart": args.vlpart_source or helpers.extract("VLPart"), "san": args.san_source or helpers.extract("SAN")}
    weights = {
        "vlpart": lambda: helpers.random_vlpart_checkpoint(sources["vlpart"], scratch / "vlpart_random.pth"),
        "san": lambda: helpers.random_san_checkpoint(sources["san"], scratch),
    }
    extra = {"vlpart": {}, "san": {"augment": "none"}}
    report: dict[str, Any] = {"segmenters": {}}
    started = time.perf_counter()
    for name in args.segmenters:
        checkpoint = weights[name]()
        report["segmenters"][name] = {
            str(size): segmenter_cost(
                xaikit.create("segmenter", name, source=str(sources[name]), weights=str(checkpoint), min_size_test=size,
                              device=args.device, **extra[name]),
                samples, args.rounds,
            )
            for size in args.sizes
        }
        for size, figures in report["segmenters"][name].items():
            print(f"{name} at {size}: {figures}", flush=True)

    if "vlpart" in args.segmenters:
        embeddings = helpers.random_text_embeddings(scratch / "bird.npy", len(BIRD_VOCABULARY))
        segmenter = xaikit.create(
            "segmenter", "vlpart", source=str(sources["vlpart"]), weights=str(scratch / "vlpart_random.pth"),
            vocabulary=list(BIRD_VOCABULARY), embeddings=str(embeddings), min_size_test=args.sizes[0], device=args.device,
        )
        train = CUBDataset(args.data_root, split="train")
        first = {int(label): index for index, label in reversed(list(enumerate(train.labels)))}
        gallery = Subset(train, [first[label] for label in sorted(first)[: args.klc_classes]])
        backbone = xaikit.create("backbone", args.backbone, device=args.device)
        klc = xaikit.create("explainer", "klc", backbone=backbone, segmenter=segmenter, cache=False,
                            prototypes_per_class=1, prototype_selection="first").fit(gallery)
        report["klc"] = {"segmenter": f"vlpart at {args.sizes[0]}", "backbone": args.backbone, "gallery": len(gallery),
                         **klc_stages(klc, [test[index] for index in range(args.queries)])}
        print(f"klc: {report['klc']}", flush=True)

    report.update({
        "command": "python benchmarks/segmenters_cost.py " + " ".join(
            [f"--images {args.images}", f"--sizes {' '.join(map(str, args.sizes))}", f"--rounds {args.rounds}",
             f"--queries {args.queries}", f"--klc-classes {args.klc_classes}", f"--backbone {args.backbone}",
             f"--segmenters {' '.join(args.segmenters)}", f"--device {args.device}"]
        ),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "images": [list(sample.size) for sample in samples],
        "wall_s": round(time.perf_counter() - started, 1),
    })
    return report


if __name__ == "__main__":
    main()
