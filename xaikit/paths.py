"""Where xaikit keeps files it makes for the user (generated datasets, feature caches)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_DIR_ENV = "XAIKIT_CACHE_DIR"


def cache_dir() -> Path:
    """The user cache directory of xaikit (not created here).

    ``$XAIKIT_CACHE_DIR`` if set; otherwise ``%LOCALAPPDATA%\\xaikit`` on Windows and
    ``$XDG_CACHE_HOME/xaikit`` (default ``~/.cache/xaikit``) elsewhere.
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "xaikit"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "xaikit"
