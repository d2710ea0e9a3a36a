"""The README's promises: CI runs its test command verbatim, and its two commands stay two."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command_verbatim():
    install_and_run, install_and_test = readme_commands()[:2]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci
    assert "pytest" in install_and_test and "xaikit " in install_and_run


def test_ci_script_is_executable_bash():
    ci = ROOT / ".ci" / "run"
    assert ci.read_text().startswith("#!/usr/bin/env bash") and ci.stat().st_mode & 0o111
