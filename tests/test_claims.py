"""Claims judged against the spread over seeds (failed runs left out and named), headline claims with the paper's
number, and the notebook checks that prose agrees with the run."""

from __future__ import annotations

import json

import nbformat
import pytest

from lth_tutorial import claims
from nbrun import headline_count, headline_problems, not_at_cpu_scale_blocks, prose_problems


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
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell("claims.show(...)")]
    nb.cells[1].outputs = [_shown_output(shown)]
    return nb


def _shown_output(shown: list[claims.Claim]):
    """The output claims.show records, captured from IPython's display."""
    from unittest import mock

    with mock.patch("IPython.display.display") as display:
        claims.show(shown)
    (data,), kwargs = display.call_args
    assert kwargs == {"raw": True}
    return nbformat.v4.new_output("display_data", data=data)


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


# ----------------------------------------------------------------------------------------------------------------
# Headline claims


PAPER = "Frankle & Carbin 2019, Fig. 3: the ticket beats random re-initialisation below ~20 % of the weights"


def test_a_headline_claim_states_the_paper():
    with pytest.raises(ValueError, match="pass paper="):
        claims.compare("h", "ticket beats reinit", [0.9, 0.91], [0.5, 0.6], headline=True)
    with pytest.raises(ValueError, match="pass paper="):
        claims.bound("h", "ticket matches", [0.9, 0.91], 0.8, headline=True, paper="  ")
    c = claims.compare("h", "ticket beats reinit", [0.9, 0.91], [0.5, 0.6], headline=True, paper=PAPER)
    assert (c.headline, c.paper, c.failed) == (True, PAPER, ())
    assert "★" in str(c) and PAPER in str(c) and "h:" in str(c)
    plain = claims.compare("p", "x", [0.9, 0.91], [0.5, 0.6])
    assert (plain.headline, plain.paper, plain.failed) == (False, "", ())


def test_show_lists_headline_claims_first_with_id_and_paper():
    from unittest import mock

    plain = claims.compare("plain-one", "a beats b", [0.9, 0.91], [0.5, 0.6])
    first = claims.compare("head-1", "first headline", [0.9, 0.91], [0.5, 0.6], headline=True, paper="P1, Fig. 1")
    second = claims.bound("head-2", "second | headline", [0.5, 0.6], 0.55, headline=True, paper="P2, Tab. 2")
    markdown = claims.to_markdown([plain, first, second], title="T")
    lines = markdown.splitlines()
    assert lines[:4] == ["**T**", "", "| id | claim | paper | verdict | evidence |", "|---|---|---|---|---|"]
    assert lines[4] == ("| `head-1` | **★ first headline** | P1, Fig. 1 | ✔ holds | A 90.5 % (min-max 90.0-91.0 %, "
                        "2 seeds) vs B 55.0 % (min-max 50.0-60.0 %, 2 seeds) |")
    assert lines[5].startswith("| `head-2` | **★ second \\| headline** | P2, Tab. 2 | ≈ within noise |")
    assert lines[6].startswith("| `plain-one` | a beats b |  | ✔ holds |")
    assert len(lines) == 7

    with mock.patch("IPython.display.display") as display:
        returned = claims.show([plain, first, second], title="T")
    assert returned == [plain, first, second]  # the order given
    data = display.call_args.args[0]
    assert data["text/markdown"] == markdown
    text = data["text/plain"]
    assert text.index("[head-1]") < text.index("[head-2]") < text.index("[plain-one]")
    assert "paper: P1, Fig. 1" in text and "paper: P2, Tab. 2" in text
    payload = json.loads(data[claims.MIMETYPE])
    assert [c["id"] for c in payload] == ["head-1", "head-2", "plain-one"]
    assert payload[0]["headline"] is True and payload[0]["paper"] == "P1, Fig. 1" and payload[0]["failed"] == []


# ----------------------------------------------------------------------------------------------------------------
# Failed runs


def test_failed_values_are_left_out_and_named():
    c = claims.compare("c", "a beats b", [0.9, 0.91, 0.1], [0.5, 0.6, 0.55], seeds=[0, 1, 2], failed_below=0.15)
    assert c.verdict == "holds" and c.seeds == 2
    assert c.failed == ("A, seed 2: 10.0 % (at chance)",)
    assert c.evidence == ("A 90.5 % (min-max 90.0-91.0 %, 2 seeds) vs B 55.0 % (min-max 50.0-60.0 %, 3 seeds); "
                          "failed: A, seed 2: 10.0 % (at chance)")
    # without failed_below the run at chance is averaged in and the verdict cannot be told
    assert claims.compare("c", "a beats b", [0.9, 0.91, 0.1], [0.5, 0.6, 0.55]).verdict == "within noise"


def test_a_non_finite_value_is_a_diverged_run():
    c = claims.compare("c", "a beats b", [0.9, float("nan"), 0.91], [0.5, 0.6, 0.55], names=("k=0", "k=500"),
                       seeds=[3, 4, 5])
    assert c.verdict == "holds" and c.seeds == 2
    assert c.failed == ("k=0, seed 4: diverged (nan)",)
    assert c.evidence.endswith("; failed: k=0, seed 4: diverged (nan)")
    b = claims.bound("b", "low error", [0.01, float("inf"), 0.02], 0.05, name="err", above=False)
    assert b.verdict == "holds" and b.failed == ("err, seed 1: diverged (inf)",)
    with pytest.raises(ValueError, match="finite value"):
        claims.compare("c", "x", [float("nan"), float("inf")], [0.1, 0.2])


def test_failed_above_for_lower_is_better():
    c = claims.compare("c", "a has less error", [0.01, 0.02, 0.95], [0.05, 0.06, 0.07], higher_is_better=False,
                       names=("rewound", "reinit"), failed_above=0.8)
    assert c.verdict == "holds" and c.seeds == 2
    assert c.failed == ("rewound, seed 2: 95.0 % (above 80.0 %: failed)",)


def test_a_side_left_with_one_value_cannot_tell():
    c = claims.compare("c", "a beats b", [0.9, 0.1], [0.5, 0.6], failed_below=0.15)
    assert c.verdict == "within noise" and c.seeds == 1 and len(c.failed) == 1
    b = claims.bound("b", "matches", [0.9, float("nan")], 0.5, name="ticket", seeds=[7, 8])
    assert b.verdict == "within noise" and b.seeds == 1 and b.failed == ("ticket, seed 8: diverged (nan)",)
    every = claims.compare("c", "a beats b", [0.05, 0.1], [0.5, 0.6], failed_below=0.15)
    assert every.verdict == "within noise" and every.seeds == 0 and "A no run left" in every.evidence
    # one seed per side and nothing failed: judged as before
    assert claims.compare("c", "a beats b", [0.9], [0.5]).verdict == "holds"
    with pytest.raises(ValueError, match="seeds"):
        claims.compare("c", "a beats b", [0.9, 0.91], [0.5, 0.6], seeds=[0, 1, 2])


def test_failed_runs_names_every_failed_arm_and_seed():
    runs = {"k=0": [0.102, 0.9, float("nan")], "k=500": [0.91, 0.92, 0.93]}
    assert claims.failed_runs(runs, [1, 2, 3], below=0.15) == ["k=0, seed 1: 10.2 % (at chance)",
                                                                "k=0, seed 3: diverged (nan)"]
    assert claims.failed_runs({"k=500": [0.91, 0.92]}, [0, 1], below=0.15) == []


# ----------------------------------------------------------------------------------------------------------------
# Headline claims that do not show at CPU scale


def _headline_notebook(markdown: str, shown: list[claims.Claim]):
    """An executed notebook whose second cell showed ``shown`` and whose third cell is ``markdown``."""
    nb = _notebook("# Chapter", shown)
    nb.cells.append(nbformat.v4.new_markdown_cell(markdown))
    return nb


NOISE = claims.compare("rewind-helps", "k = 500 beats k = 0 at 5 % of the weights", [0.9, 0.91], [0.905, 0.92],
                       headline=True, paper="Frankle et al. 2019, Fig. 6A: k = 500 matching down to ~15 %")
HOLDS = claims.compare("ticket-beats-reinit", "the ticket beats reinit", [0.9, 0.91], [0.5, 0.6], headline=True,
                       paper=PAPER)
BLOCK = ("At CPU scale this run cannot tell rewinding from k = 0; see [findings](../docs/findings.md), or run it at "
         "scale:\n\n    lth sweep chapter02 --full\n\n<!-- not-at-cpu-scale: rewind-helps -->")
FINDINGS = "## Chapter 2\n\n`rewind-helps`: holds at full scale (5 seeds)."


def test_a_headline_claim_that_does_not_hold_needs_a_block():
    nb = _headline_notebook("Nothing said.", [HOLDS, NOISE])
    assert headline_count(nb) == 2
    problems = headline_problems(nb, FINDINGS)
    assert len(problems) == 1 and "'rewind-helps'" in problems[0] and "within noise" in problems[0]
    assert "no markdown cell says so" in problems[0]


def test_a_proper_block_with_findings_accounts_for_it():
    nb = _headline_notebook(BLOCK, [HOLDS, NOISE])
    assert not_at_cpu_scale_blocks(nb) == {"rewind-helps": 2}
    assert headline_problems(nb, FINDINGS) == []
    for command in ("Run `lth run 02 --seeds 5` for the full run.", "Set LTH_QUICK=0 and rerun.",
                    "Set `QUICK = False` in the first cell."):
        text = f"See docs/findings.md. {command} <!-- not-at-cpu-scale: rewind-helps -->"
        assert headline_problems(_headline_notebook(text, [HOLDS, NOISE]), FINDINGS) == [], command


def test_a_block_needs_a_command_and_the_findings_link():
    no_command = BLOCK.replace("    lth sweep chapter02 --full", "run the full sweep")
    problems = headline_problems(_headline_notebook(no_command, [NOISE]), FINDINGS)
    assert len(problems) == 1 and "no command" in problems[0]
    assert len(headline_problems(_headline_notebook(BLOCK.replace("lth sweep", "lthx sweep"), [NOISE]),
                                 FINDINGS)) == 1
    no_link = BLOCK.replace("../docs/findings.md", "findings.html")
    problems = headline_problems(_headline_notebook(no_link, [NOISE]), FINDINGS)
    assert len(problems) == 1 and "does not link docs/findings.md" in problems[0]


def test_findings_must_report_the_claim():
    problems = headline_problems(_headline_notebook(BLOCK, [NOISE]), "## Chapter 2\n\n`rewind-helps-more`: ...")
    assert len(problems) == 1 and "does not report it" in problems[0]
    assert len(headline_problems(_headline_notebook(BLOCK, [NOISE]), "")) == 1


def test_a_block_for_an_unknown_headline_claim_is_a_problem():
    plain = claims.compare("rewind-helps", "k = 500 beats k = 0", [0.9, 0.91], [0.905, 0.92])  # not a headline
    for shown in ([HOLDS], [plain]):
        problems = headline_problems(_headline_notebook(BLOCK, shown), FINDINGS)
        assert len(problems) == 1 and "no cell showed a headline claim" in problems[0], shown
    # a headline claim that holds needs no block; a plain claim within noise is not checked here
    assert headline_problems(_headline_notebook("Nothing said.", [HOLDS, plain]), "") == []
    assert headline_count(_headline_notebook("Nothing said.", [HOLDS, plain])) == 1


def test_paired_compare_judges_per_seed_differences():
    # the seeds' spread (0.70 .. 0.90) is larger than the effect, but A beats B on every seed
    a, b = [0.72, 0.81, 0.91, 0.86, 0.78], [0.70, 0.79, 0.90, 0.84, 0.75]
    assert claims.compare("c", "a beats b", a, b).verdict == "within noise"
    paired = claims.compare("c", "a beats b", a, b, paired=True, names=("k=50", "k=0"))
    assert paired.verdict == "holds" and paired.seeds == 5
    assert paired.evidence.startswith("k=50 better on 5 of 5 seeds, by 2.0 % (min-max 1.0-3.0 %, 5 seeds)")
    assert claims.compare("c", "b beats a", b, a, paired=True).verdict == "reversed"
    assert claims.compare("c", "x", [0.5, 0.6, 0.7], [0.4, 0.65, 0.6], paired=True).verdict == "within noise"
    lower = claims.compare("c", "less error", [0.1, 0.2], [0.15, 0.3], paired=True, higher_is_better=False)
    assert lower.verdict == "holds"
    with pytest.raises(ValueError, match="one value per seed on both sides"):
        claims.compare("c", "x", [0.5, 0.6], [0.4], paired=True)


def test_paired_compare_drops_a_pair_with_a_failed_run():
    a, b = [0.80, 0.82, 0.10, 0.85], [0.78, 0.80, 0.60, float("nan")]
    claim = claims.compare("c", "a beats b", a, b, paired=True, seeds=[3, 4, 5, 6], failed_below=0.15,
                           names=("A", "B"))
    assert claim.verdict == "holds" and claim.seeds == 2
    assert claim.failed == ("A, seed 5: 10.0 % (at chance)", "B, seed 6: diverged (nan)")
    one_left = claims.compare("c", "a beats b", a[:3], b[:3], paired=True, failed_below=0.79)
    assert one_left.verdict == "within noise" and one_left.seeds == 1
