"""How cheap the listing commands are: ``xaikit plugins``, ``list``, ``info`` and ``--help`` against a bare interpreter and ``import torch``.

Usage::

    python benchmarks/plugin_listing.py [--repeats 5] [--out-json benchmarks/results/plugin_listing.json]

Each command runs in a fresh interpreter ``--repeats`` times in one run; the median wall time of each
is reported with the ratios. Listing, documenting a component and printing help must never import
torch or build a model (``tests/cli/test_import_cost.py`` guards the import set), so each should cost a
small fraction of ``import torch``; the target is under 0.5 s over a bare interpreter.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "bare_interpreter": [sys.executable, "-c", "pass"],
    "xaikit_plugins_json": [sys.executable, "-m", "xaikit", "plugins", "--json"],
    "xaikit_list_segmenters": [sys.executable, "-m", "xaikit", "list", "segmenters"],
    "xaikit_info_vlpart": [sys.executable, "-m", "xaikit", "info", "segmenter", "vlpart"],
    "xaikit_bench_help": [sys.executable, "-m", "xaikit", "bench", "--help"],
    "import_torch": [sys.executable, "-c", "import torch"],
}


def median_seconds(command: list[str], repeats: int) -> float:
    """Median wall time of ``command`` over ``repeats`` fresh runs (after one warm-up run)."""
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--out-json", type=pathlib.Path, default=pathlib.Path("benchmarks/results/plugin_listing.json"))
    args = parser.parse_args(argv)
    seconds = {name: median_seconds(command, args.repeats) for name, command in COMMANDS.items()}
    bare, torch_import = seconds["bare_interpreter"], seconds["import_torch"] - seconds["bare_interpreter"]
    overhead = {name: value - bare for name, value in seconds.items() if name.startswith("xaikit_")}
    result = {
        "benchmark": "plugin_listing",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "repeats": args.repeats,
        "median_seconds": {name: round(value, 4) for name, value in seconds.items()},
        "overhead_s": {name: round(value, 4) for name, value in overhead.items()},
        "overhead_over_torch_import": {name: round(value / torch_import, 3) for name, value in overhead.items()},
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
