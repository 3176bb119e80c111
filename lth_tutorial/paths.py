"""Where the package keeps files it makes (datasets it generates, the run store)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$LTH_CACHE`` if set, else the per-user cache directory (e.g. ``~/.cache/lth_tutorial`` on Linux)."""
    env = os.environ.get("LTH_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("lth_tutorial", appauthor=False))
