"""Helpers shared by the chapter notebooks: the set-up cell and the repository links (Colab badge, install line).

The repository address lives in one place, ``[project.urls] Repository`` of ``pyproject.toml``. The notebooks carry
it literally (Colab opens them before the package exists), so after changing that line run::

    python -m lth_tutorial.notebook sync

which rewrites every notebook's badge and install line; a test fails while they are out of sync.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import device as device_mod
from .paths import cache_dir
from .presets import quick_mode

__all__ = ["Context", "setup", "repository_url", "colab_badge", "install_line", "sync_links", "check_links"]

ROOT = Path(__file__).resolve().parent.parent
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
                      r"\(https://colab\.research\.google\.com/github/[^)]*\)")
INSTALL_RE = re.compile(r'lth_tutorial\[notebooks\] @ git\+[^"\']*')


@dataclass(frozen=True)
class Context:
    """What a notebook's set-up cell decided.

    Attributes:
        quick: quick mode (CPU-sized runs on embedded data) or full mode (the paper's setting).
        device: where tensors and models live.
        cache: the cache folder (datasets made offline, finished runs).
    """

    quick: bool
    device: torch.device
    cache: Path


def setup(device: str = "auto", quick: bool | None = None, threads: int | None = None,
          verbose: bool = True) -> Context:
    """Decide quick/full mode (``LTH_QUICK``, default quick), the device and PyTorch's thread count (one thread in
    quick mode on a CPU, see :func:`lth_tutorial.device.configure_threads`); print what was chosen."""
    quick = quick_mode() if quick is None else quick
    chosen = device_mod.pick(device)
    n_threads = device_mod.configure_threads(threads, quick, chosen)
    ctx = Context(quick=quick, device=chosen, cache=cache_dir())
    if verbose:
        mode = ("QUICK (CPU-sized, embedded data; set LTH_QUICK=0 or QUICK = False for the paper's setting)"
                if ctx.quick else "FULL (the paper's setting; best on a GPU)")
        print(f"mode: {mode}\ndevice: {ctx.device}   torch {torch.__version__} ({n_threads} thread"
              f"{'s' if n_threads > 1 else ''})   cache: {ctx.cache}")
    return ctx


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``[project.urls] Repository`` from pyproject.toml, without a trailing slash or ``.git``."""
    import tomllib

    with open(pyproject, "rb") as fh:
        url = tomllib.load(fh)["project"]["urls"]["Repository"]
    return url.rstrip("/").removesuffix(".git")


def _github_path(url: str) -> str:
    match = re.match(r"https://github\.com/([^/]+/[^/]+)$", url)
    if not match:
        raise ValueError(f"Repository URL {url!r} is not of the form https://github.com/OWNER/NAME")
    return match.group(1)


def colab_badge(notebook_name: str, url: str | None = None, branch: str = "main") -> str:
    """Markdown of the "Open in Colab" badge for ``notebooks/<notebook_name>``."""
    path = _github_path(url or repository_url())
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{path}/blob/{branch}/notebooks/{notebook_name})")


def install_line(url: str | None = None) -> str:
    """The pip requirement the Colab set-up cell installs."""
    return f"lth_tutorial[notebooks] @ git+{url or repository_url()}"


def _rewrite(nb: dict, name: str, url: str) -> dict:
    for cell in nb["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new = BADGE_RE.sub(lambda _: colab_badge(name, url), text)
        new = INSTALL_RE.sub(lambda _: install_line(url), new)
        cell["source"] = new
    return nb


def check_links(notebooks: Path = ROOT / "notebooks", url: str | None = None) -> list[str]:
    """Names of notebooks whose badge or install line disagrees with pyproject (or that lack them)."""
    url = url or repository_url()
    stale = []
    for path in sorted(notebooks.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        text = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in nb["cells"])
        if colab_badge(path.name, url) not in text or install_line(url) not in text:
            stale.append(path.name)
    return stale


def sync_links(notebooks: Path = ROOT / "notebooks", url: str | None = None) -> list[str]:
    """Rewrite badge and install line of every notebook from pyproject's URL; returns the changed names."""
    url = url or repository_url()
    changed = []
    for path in sorted(notebooks.glob("*.ipynb")):
        original = path.read_text()
        nb = _rewrite(json.loads(original), path.name, url)
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if text != original:
            path.write_text(text)
            changed.append(path.name)
    return changed


if __name__ == "__main__":
    if sys.argv[1:] == ["sync"]:
        print("updated:", ", ".join(sync_links()) or "nothing")
    elif sys.argv[1:] == ["check"]:
        stale = check_links()
        print("out of sync:", ", ".join(stale) if stale else "none")
        sys.exit(1 if stale else 0)
    else:
        print("usage: python -m lth_tutorial.notebook sync|check", file=sys.stderr)
        sys.exit(2)
