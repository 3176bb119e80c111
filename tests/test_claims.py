"""Claims judged against the spread over seeds, and the notebook check that prose agrees with the run."""

from __future__ import annotations

import nbformat
import pytest

from lth_tutorial import claims
from nbrun import prose_problems


def test_compare_uses_min_max_over_seeds():
    assert claims.compare("c", "a beats b", [0.80, 0.82, 0.81], [0.70, 0.79, 0.75]).verdict == "holds"
    assert claims.compare("c", "a beats b", [0.80, 0.82, 0.81], [0.70, 0.80, 0.75]).verdict == "within noise"
    assert claims.compare("c", "a beats b", [0.60, 0.62], [0.70, 0.80]).verdict == "reversed"
    lower = claims.compare("c", "a has less error", [0.01, 0.02], [0.05, 0.06], higher_is_better=False)
    assert lower.verdict == "holds" and lower.seeds == 2
    assert "min-max 1.0-2.0 %" in lower.evidence


def test_bound_and_bad_input():
    assert claims.bound("b", "above chance", [0.3, 0.4], 0.1).verdict == "holds"
    assert claims.bound("b", "below 2 %", [0.01, 0.03], 0.02, above=False).verdict == "within noise"
    with pytest.raises(ValueError, match="finite value"):
        claims.compare("c", "x", [], [0.1])
    with pytest.raises(ValueError, match="finite value"):
        claims.bound("b", "x", [float("nan")], 0.1)


def _notebook(markdown: str, shown: list[claims.Claim]):
    """An 'executed' notebook: one markdown cell and one code cell whose output is what claims.show displays."""
    import json
    from dataclasses import asdict

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell("claims.show(...)")]
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={
        claims.MIMETYPE: json.dumps([asdict(c) for c in shown]), "text/plain": "..."})]
    return nb


def test_prose_must_agree_with_the_run():
    holds = claims.compare("ticket_beats_reinit", "ticket beats reinit", [0.9, 0.91], [0.5, 0.6])
    noise = claims.compare("rewind_helps", "k > 0 beats k = 0", [0.9, 0.91], [0.905, 0.92])
    assert prose_problems(_notebook("The ticket wins. <!-- claim: ticket_beats_reinit -->", [holds, noise])) == []
    problems = prose_problems(_notebook("Rewinding helps. <!-- claim: rewind_helps -->", [holds, noise]))
    assert len(problems) == 1 and "within noise" in problems[0]
    problems = prose_problems(_notebook("See <!-- claim: missing_one -->", [holds]))
    assert len(problems) == 1 and "no cell showed" in problems[0]
    problems = prose_problems(_notebook("In quick mode the ticket reaches 62.5 % accuracy.", []))
    assert len(problems) == 1 and "types a result" in problems[0]
    assert prose_problems(_notebook("The paper reports 3.6 % of the weights.", [])) == []
