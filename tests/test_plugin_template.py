"""The plugin template, used as its README says: copied, renamed, installed, listed, built and tested.

The README's copy-and-rename commands run verbatim (with the path to this checkout filled in). The
install uses ``pip install --target`` instead of the README's ``pip install -e .``, so that the test
environment itself is left alone; the entry point is the same either way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
TEMPLATE = REPOSITORY / "docs" / "examples" / "xaikit-plugin-template"
RENAME_HEADING = "## 1. Copy and rename"


def readme_commands(heading: str) -> str:
    """The first ```bash block under ``heading`` in the template's README."""
    text = (TEMPLATE / "README.md").read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, f"no bash block under '{heading}'"
    return block.group(1)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template copied and renamed by the README's commands: package xaikit_acme_parts, plugin acme-parts."""
    workspace = tmp_path_factory.mktemp("author")
    commands = readme_commands(RENAME_HEADING).replace("path/to/xaikit", str(REPOSITORY))
    subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=workspace, check=True, capture_output=True, timeout=60)
    return workspace / "xaikit-acme-parts"


@pytest.fixture(scope="module")
def installed(plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pip-install the renamed plugin into a fresh target; return an environment that sees it, autoloading on."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(plugin)],
        check=True, capture_output=True, timeout=300,
    )
    return {**os.environ, "PYTHONPATH": str(target), "XAIKIT_DISABLE_PLUGIN_AUTOLOAD": ""}


def test_renaming_leaves_nothing_of_the_template_name(plugin):
    assert (plugin / "xaikit_acme_parts" / "__init__.py").is_file() and not (plugin / "xaikit_my_plugin").exists()
    for source in ("pyproject.toml", "README.md", "xaikit_acme_parts/__init__.py", "xaikit_acme_parts/segmenter.py", "tests/test_segmenter.py"):
        text = (plugin / source).read_text()
        assert not re.search(r"my_plugin|my-plugin|plugin-template", text), f"{source} still names the template"
    assert 'acme-parts = "xaikit_acme_parts"' in (plugin / "pyproject.toml").read_text()


def test_xaikit_plugins_lists_the_new_plugin(installed):
    listing = subprocess.run([sys.executable, "-m", "xaikit", "plugins", "--json"], capture_output=True, text=True, env=installed, check=True)
    payload = json.loads(listing.stdout)
    (plugin,) = [p for p in payload["plugins"] if p["name"] == "acme-parts"]
    assert plugin == {
        "name": "acme-parts",
        "distribution": "xaikit-acme-parts",
        "version": "0.1.0",
        "builtin": False,
        "status": "ok",
        "error": None,
        "components": ["segmenter:centre"],
    }
    (centre,) = [c for c in payload["components"] if c["name"] == "centre"]
    assert centre["kind"] == "segmenter" and centre["plugin"] == "acme-parts" and centre["status"] == "ok"
    table = subprocess.run([sys.executable, "-m", "xaikit", "plugins"], capture_output=True, text=True, env=installed, check=True)
    assert "acme-parts" in table.stdout and "xaikit-acme-parts" in table.stdout


def test_the_component_is_built_by_name(installed):
    code = (
        "import numpy as np, xaikit\n"
        "segmenter = xaikit.create('segmenter', 'centre', fraction=0.5)\n"
        "(part_map,) = segmenter.segment([xaikit.Sample(np.zeros((4, 4, 3), np.uint8))])\n"
        "print(type(segmenter).__module__, part_map.labels.tolist())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=installed, check=True)
    assert result.stdout.strip() == "xaikit_acme_parts.segmenter [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]"


def test_the_plugins_own_tests_pass_the_contract(plugin, installed):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"],
        capture_output=True, text=True, env=installed, cwd=plugin, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "skipped" not in output, output  # the registration check ran: the plugin was found by name
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) >= 12, output  # the contract's checks, not only the template's own tests


def test_the_plugin_guide_repeats_the_readme_commands():
    guide = (REPOSITORY / "docs" / "plugins.md").read_text()
    for line in readme_commands(RENAME_HEADING).splitlines()[2:]:  # after the cp and cd lines
        assert line in guide, f"docs/plugins.md lacks the README's command line {line!r}"
