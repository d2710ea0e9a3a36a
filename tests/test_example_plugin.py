"""The third-party example plugin, pip-installed into a target directory and used by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "xaikit-example-plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pip-install the example into a fresh target directory; return the environment that sees it."""
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {**os.environ, "PYTHONPATH": str(target), "XAIKIT_DISABLE_PLUGIN_AUTOLOAD": ""}


def test_installed_example_is_listed(installed_example):
    result = subprocess.run([sys.executable, "-m", "xaikit", "plugins", "--json"], capture_output=True, text=True, env=installed_example, check=True)
    payload = json.loads(result.stdout)
    (plugin,) = [p for p in payload["plugins"] if p["name"] == "example"]
    assert plugin == {
        "name": "example",
        "distribution": "xaikit-example-plugin",
        "version": "0.1.0",
        "builtin": False,
        "status": "ok",
        "error": None,
        "components": ["segmenter:grid"],
    }
    (grid,) = [c for c in payload["components"] if c["name"] == "grid"]
    assert grid["kind"] == "segmenter" and grid["plugin"] == "example" and grid["status"] == "ok"


def test_installed_example_is_usable_by_name(installed_example):
    code = (
        "import numpy as np, xaikit\n"
        "segmenter = xaikit.create('segmenter', 'grid', rows=2, cols=3)\n"
        "(part_map,) = segmenter.segment([xaikit.Sample(np.zeros((4, 6, 3), np.uint8))])\n"
        "print(part_map.labels.tolist(), list(segmenter.vocabulary))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=installed_example, check=True)
    assert result.stdout.strip() == (
        "[[1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [4, 4, 5, 5, 6, 6]] "
        "['cell 0,0', 'cell 0,1', 'cell 0,2', 'cell 1,0', 'cell 1,1', 'cell 1,2']"
    )


def test_example_plugins_own_tests_pass(installed_example):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, env=installed_example, cwd=EXAMPLE,
    )
    assert result.returncode == 0, result.stdout + result.stderr
