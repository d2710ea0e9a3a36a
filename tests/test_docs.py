"""The documentation: it builds with mkdocs in strict mode, and the API reference covers xaikit.__all__."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import xaikit

ROOT = Path(__file__).resolve().parents[1]


def api_entries() -> dict[str, str]:
    """Name -> defining path of every ``::: path`` directive in docs/api.md."""
    paths = re.findall(r"^::: (\S+)$", (ROOT / "docs" / "api.md").read_text(), flags=re.M)
    return {path.rsplit(".", 1)[1]: path for path in paths}


def test_every_public_name_is_in_the_api_reference_with_a_docstring():
    griffe = pytest.importorskip("griffe", reason="the docs extra (mkdocstrings) is not installed")
    entries = api_entries()
    public = set(xaikit.__all__) - {"__version__"}
    assert public <= set(entries), f"missing from docs/api.md: {sorted(public - set(entries))}"
    package = griffe.GriffeLoader(search_paths=[str(ROOT), str(ROOT / "plugins")]).load("xaikit")
    undocumented = []
    for name in sorted(public):
        documented = package[entries[name].removeprefix("xaikit.")]
        if not (documented.docstring and documented.docstring.value.strip()):
            undocumented.append(entries[name])
    assert not undocumented, f"public names without a docstring: {undocumented}"
    assert all(entries[name].endswith("." + name) for name in public)


def test_the_docs_build_without_warnings(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
