"""The listing commands and every ``--help`` import no heavy library, so they answer at once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "numpy", "PIL", "transformers", "timm", "open_clip", "detectron2", "pandas", "matplotlib")


@pytest.mark.parametrize(
    "argv",
    [
        ["plugins"], ["plugins", "--json"], ["list", "segmenters"], ["list", "explainers", "k*"],
        ["info", "explainer", "klc"], ["info", "segmenter", "vlpart"], ["info", "metric", "consistency"], ["info", "backbone", "timm"],
        ["--help"], ["bench", "--help"], ["train", "--help"], ["explain", "--help"], ["segment", "--help"], ["features", "--help"], ["data", "check", "--help"],
        ["compare", "--help"],
    ],
)
def test_the_command_imports_no_heavy_library(argv):
    code = (
        "import sys\n"
        "from xaikit.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + repr([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    heavy = json.loads(result.stdout.rpartition("HEAVY=")[2].replace("'", '"'))
    assert heavy == [], f"xaikit {' '.join(argv)} imported {heavy}"
