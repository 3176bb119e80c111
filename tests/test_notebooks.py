"""Every chapter notebook runs top to bottom in quick mode, widget callbacks included, without any error, and its
prose agrees with its own run:

* every claim a markdown cell relies on (``<!-- claim: ID -->``) holds, and no markdown line types a result of the run;
* every headline claim (``claims.compare``/``claims.bound`` with ``headline=True, paper=...``) that this run does not
  confirm is accounted for: a markdown cell tagged ``<!-- not-at-cpu-scale: ID -->`` says so, links docs/findings.md
  and gives the command that runs it at scale, and docs/findings.md reports the claim (names its id);
* the chapters in :data:`HEADLINE_CHAPTERS` show at least two headline claims each.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbrun import execute, headline_count, headline_problems, prose_problems

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FINDINGS = ROOT / "docs" / "findings.md"
#: chapters (the first two characters of the notebook's name) that must show at least two headline claims. These have
#: their headline claims and a quick setting in which they hold or are accounted for (docs/findings.md); the other
#: chapters join as theirs are built.
HEADLINE_CHAPTERS = {"00", "01", "02", "03", "04", "05", "06"}


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
    findings = FINDINGS.read_text(encoding="utf-8") if FINDINGS.exists() else ""
    problems = headline_problems(nb, findings)
    assert not problems, "\n".join(problems)
    if path.stem[:2] in HEADLINE_CHAPTERS:
        count = headline_count(nb)
        assert count >= 2, (f"chapter {path.stem} lacks headline claims: it shows {count}, needs at least 2 "
                            f"(claims.compare/bound with headline=True, paper=...)")
