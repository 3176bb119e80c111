"""Every chapter notebook runs top to bottom in quick mode, widget callbacks included, without any error, and its
prose agrees with its own run (every claim a markdown cell relies on holds; no typed results)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbrun import execute, prose_problems

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("LTH_QUICK", "1")
    monkeypatch.setenv("LTH_CACHE", str(tmp_path / "cache"))
    timeout = int(os.environ.get("LTH_NOTEBOOK_TIMEOUT", "300"))  # per cell, seconds (the slowest takes < 1 min)
    nb, seconds, errors = execute(path, timeout=timeout, cwd=tmp_path)
    print(f"{path.name}: {seconds:.1f} s in quick mode")
    assert not errors, "\n".join(errors)
    problems = prose_problems(nb)
    assert not problems, "\n".join(problems)
