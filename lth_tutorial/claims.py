"""A chapter's claims, computed from its own run and judged against the spread over seeds.

Markdown never carries a number of our run: numbers differ between CPUs and seeds. A chapter states what the paper
found in prose, then a code cell computes *this* run's verdict with :func:`compare` (A better than B?) or
:func:`bound` (A above a threshold?) over several seeds and shows it with :func:`show`:

* ``holds``: the claim is true for every seed (min-max bars do not overlap: ``min(A) > max(B)``);
* ``reversed``: the opposite is true for every seed;
* ``within noise``: the seeds disagree (the bars overlap), so this run cannot tell.

Two arms that share everything a seed decides (initialisation, dense run, data order) and differ only in the
treatment -- a ticket rewound to ``k > 0`` against the same seed's ticket reset to ``k = 0`` -- are compared
**paired** (``compare(..., paired=True)``): ``holds`` when A beats B on every seed, i.e. every per-seed difference is
positive. Most of the seed-to-seed spread (one seed's network is simply better than another's) then cancels; a
claim that holds on ``n`` seeds would hold by chance with probability ``2 ** -n`` if the treatment did nothing.

A markdown cell that relies on a claim tags it with an HTML comment, ``<!-- claim: ID -->`` (invisible when
rendered); the notebook test executes the chapter and fails unless every tagged claim was shown with the verdict
``holds``. Untagged claims are shown for the reader, whatever their verdict, and the prose around them must be worded
so that any verdict reads correctly ("the table says whether this run agrees").

**Headline claims.** The few claims a chapter exists to test (the paper's main result) are passed with
``headline=True`` and ``paper="..."``: the paper's own number or direction with its figure or table, e.g.
``paper="Frankle et al. 2019, Fig. 6A: k = 500 matching down to ~15 % of the weights"``. A headline claim without
``paper`` is refused. :func:`show` lists headline claims first (in the order given), marked with a star, next to the
paper's number, so the reader compares the paper with this run in one table.

**Failed runs.** A run that diverged (a NaN or infinite value) or never learnt (e.g. accuracy at chance) says nothing
about the claim and must not be averaged in. ``compare``/``bound`` always treat a non-finite value as failed and,
given ``failed_below`` (for accuracies: chance plus a margin, in the units of the values) or ``failed_above`` (for
errors and losses), also a value beyond that level. Failed values are left out of the verdict and named in
:attr:`Claim.failed` and at the end of the evidence ("...; failed: k=0, seed 3: 10.2 % (at chance)"), with the seed
of each value from ``seeds=``. Where excluding failed runs leaves a side with fewer than two values, the verdict is
``within noise``: one seed cannot tell. :func:`failed_runs` names the failed runs of a whole display (a figure or
a table) with the same rule.

**Not at CPU scale.** A headline claim may not show in a chapter's CPU-sized (quick) run: too few iterations, too
small a network. The chapter then says so in a markdown cell tagged ``<!-- not-at-cpu-scale: ID -->`` (ID: the
headline claim's id). The notebook test (``tests/nbrun.py``: ``headline_problems``) fails on every shown headline claim
whose verdict is not ``holds`` unless such a block exists, links ``docs/findings.md`` and gives the command that runs
the claim at scale (an ``lth ...`` command, or ``LTH_QUICK=0`` / ``QUICK = False``), and ``docs/findings.md``
reports the claim (mentions its id).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Claim", "compare", "bound", "show", "to_markdown", "to_text", "failed_runs", "MIMETYPE", "VERDICTS"]

#: the output type under which :func:`show` records the claims in the executed notebook (read by the tests).
MIMETYPE = "application/vnd.lth-tutorial.claims+json"
VERDICTS = ("holds", "within noise", "reversed")
#: how :func:`show` marks a headline claim.
HEADLINE_MARK = "★"


@dataclass(frozen=True)
class Claim:
    """One claim and its verdict on this run.

    Attributes:
        id: a stable name, referenced from markdown as ``<!-- claim: ID -->`` (or ``<!-- not-at-cpu-scale: ID -->``).
        statement: what is claimed, in words (e.g. "the ticket beats random re-initialisation at 5 % density").
        verdict: one of :data:`VERDICTS`.
        evidence: the computed numbers behind the verdict (ranges over seeds), ending with "; failed: ..." when runs
            were left out.
        seeds: how many seeds (values per side) the verdict rests on, failed runs not counted.
        headline: one of the claims the chapter exists to test (listed first by :func:`show`).
        paper: the paper's number or direction with its figure/table (required for a headline claim).
        failed: the values left out of the verdict, one string per failed run ("k=0, seed 3: diverged (nan)").
    """

    id: str
    statement: str
    verdict: str
    evidence: str
    seeds: int
    headline: bool = False
    paper: str = ""
    failed: tuple[str, ...] = ()

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"

    def __str__(self) -> str:
        mark = f"{HEADLINE_MARK} " if self.headline else ""
        paper = f" (paper: {self.paper})" if self.paper else ""
        return f"[{self.verdict}] {mark}{self.id}: {self.statement} -- {self.evidence}{paper}"


# ----------------------------------------------------------------------------------------------------------------
# Values, failed runs and their formatting


def _format(value: float, scale: float, unit: str) -> str:
    """One value as shown in the evidence: ``scale * value`` with one decimal and ``unit``."""
    return f"{scale * value:.1f}{unit}"


def _failure(value: float, below: float | None, above: float | None, scale: float, unit: str) -> str | None:
    """Why ``value`` is a failed run, or None when it is not: non-finite (diverged), below ``below`` (at chance)
    or above ``above``. ``below``/``above`` are in the units of ``value`` (None: no such level)."""
    if not math.isfinite(value):
        return f"diverged ({value})"
    if below is not None and value < below:
        return f"{_format(value, scale, unit)} (at chance)"
    if above is not None and value > above:
        return f"{_format(value, scale, unit)} (above {_format(above, scale, unit)}: failed)"
    return None


def _split_failed(values: Iterable[float], seeds: Sequence[int] | None, name: str, *, below: float | None = None,
                  above: float | None = None, scale: float = 100.0,
                  unit: str = " %") -> tuple[np.ndarray, list[str], int]:
    """Separate one side's values into those kept and the failed runs.

    Args:
        values: one value per seed.
        seeds: the seed of each value, same order (None: 0, 1, ...).
        name: the side's name in the failure strings ("k=0").
        below, above: a finite value below ``below`` / above ``above`` is a failed run (same units as ``values``);
            a non-finite value always is.
        scale, unit: how values are formatted.

    Returns:
        ``(kept values, failure strings "NAME, seed S: WHY", number of finite values)``.
    """
    array = np.asarray(list(values), dtype=float).reshape(-1)
    seeds = list(range(array.size)) if seeds is None else list(seeds)
    if len(seeds) != array.size:
        raise ValueError(f"{name}: {array.size} values but {len(seeds)} seeds {seeds}")
    kept, failed = [], []
    for seed, value in zip(seeds, array.tolist()):
        why = _failure(value, below, above, scale, unit)
        if why is None:
            kept.append(value)
        else:
            failed.append(f"{name}, seed {seed}: {why}")
    return np.asarray(kept, dtype=float), failed, int(np.isfinite(array).sum())


def _side(values: Sequence[float], seeds: Sequence[int] | None, what: str, name: str, below: float | None,
          above: float | None, scale: float, unit: str) -> tuple[np.ndarray, list[str]]:
    """:func:`_split_failed` for one side of a claim; refuses a side with no finite value."""
    values = list(values)
    kept, failed, finite = _split_failed(values, seeds, name, below=below, above=above, scale=scale, unit=unit)
    if finite == 0:
        raise ValueError(f"{what} needs at least one finite value per seed, got {list(values)}")
    return kept, failed


def _range(values: np.ndarray, scale: float, unit: str) -> str:
    if values.size == 0:
        return "no run left"
    low, high = scale * values.min(), scale * values.max()
    if values.size == 1:
        return f"{low:.1f}{unit}"
    return f"{scale * values.mean():.1f}{unit} (min-max {low:.1f}-{high:.1f}{unit}, {values.size} seeds)"


def _with_failed(evidence: str, failed: Sequence[str]) -> str:
    return f"{evidence}; failed: {', '.join(failed)}" if failed else evidence


def _check_headline(claim_id: str, headline: bool, paper: str) -> None:
    if headline and not paper.strip():
        raise ValueError(f"{claim_id}: a headline claim states the paper's number or direction: pass paper=...")


def failed_runs(values_by_arm: dict[str, Sequence[float]], seeds: Sequence[int], *, below: float | None = None,
                above: float | None = None, scale: float = 100.0, unit: str = " %") -> list[str]:
    """Name the failed runs of a display (a figure, a table), with the rule :func:`compare` and :func:`bound` use.

    Args:
        values_by_arm: ``{arm name: one value per seed}`` (e.g. ``{"k=0": accuracies}``, fractions).
        seeds: the seed of each value, same order for every arm.
        below: a value below it failed (e.g. chance accuracy plus a margin, same units as the values).
        above: a value above it failed (errors, losses). A non-finite value (diverged run) always failed.
        scale, unit: how values are formatted (default: fractions shown as percent).

    Returns:
        one string per failed (arm, seed), e.g. ``"k=0, seed 3: 10.2 % (at chance)"``; empty when none failed.
    """
    out: list[str] = []
    for arm, values in values_by_arm.items():
        out += _split_failed(values, seeds, arm, below=below, above=above, scale=scale, unit=unit)[1]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Claims


def compare(claim_id: str, statement: str, a: Sequence[float], b: Sequence[float], *, names=("A", "B"),
            scale: float = 100.0, unit: str = " %", higher_is_better: bool = True, headline: bool = False,
            paper: str = "", seeds: Sequence[int] | None = None, failed_below: float | None = None,
            failed_above: float | None = None, paired: bool = False) -> Claim:
    """Is ``a`` better than ``b`` for every seed?

    Unpaired (default): every seed of ``a`` beats every seed of ``b`` (the min-max ranges do not overlap). Paired
    (``paired=True``, for two arms that share everything a seed decides -- the same initialisation, the same dense
    run, the same data order -- and differ only in the treatment): ``a[i]`` beats ``b[i]`` for every seed ``i``.
    The seed-to-seed spread then cancels out of the comparison; with ``n`` seeds, "holds" by chance alone (no
    effect, a fair coin per seed) has probability ``2 ** -n`` (a one-sided sign test: 1/32 at five seeds). A pair
    with a failed run on either side is left out.

    Args:
        claim_id, statement: see :class:`Claim`.
        a, b: one value per seed (e.g. accuracies as fractions). With ``higher_is_better=False`` lower wins (errors,
            losses, instabilities).
        names: the two sides' names in the evidence and in the failed-run strings.
        scale, unit: only format the evidence (default: fractions shown as percent).
        headline, paper: a headline claim, with the paper's number or direction (required when ``headline``).
        seeds: the seed of each value of ``a`` and of ``b`` (same order; default 0, 1, ...).
        failed_below: a value below it is a failed run, left out of the verdict (e.g. chance accuracy plus a
            margin, same units as ``a`` and ``b``); ``failed_above``: a value above it is (for errors and losses).
            Both apply to both sides, so they must mark runs that failed to train, never a result the claim is about.
            A non-finite value is always a failed run (diverged).

    Raises:
        ValueError: a side is empty or has no finite value; a headline claim without ``paper``.
    """
    _check_headline(claim_id, headline, paper)
    if paired:
        return _compare_paired(claim_id, statement, a, b, names=names, scale=scale, unit=unit,
                               higher_is_better=higher_is_better, headline=headline, paper=paper, seeds=seeds,
                               failed_below=failed_below, failed_above=failed_above)
    a, failed_a = _side(a, seeds, f"{claim_id}: {names[0]}", names[0], failed_below, failed_above, scale, unit)
    b, failed_b = _side(b, seeds, f"{claim_id}: {names[1]}", names[1], failed_below, failed_above, scale, unit)
    failed = failed_a + failed_b
    sign = 1.0 if higher_is_better else -1.0
    if failed and min(a.size, b.size) < 2:
        verdict = "within noise"  # what is left of a side cannot tell noise from a difference
    elif (sign * a).min() > (sign * b).max():
        verdict = "holds"
    elif (sign * a).max() < (sign * b).min():
        verdict = "reversed"
    else:
        verdict = "within noise"
    evidence = _with_failed(f"{names[0]} {_range(a, scale, unit)} vs {names[1]} {_range(b, scale, unit)}", failed)
    return Claim(claim_id, statement, verdict, evidence, int(min(a.size, b.size)), headline, paper, tuple(failed))


def _compare_paired(claim_id: str, statement: str, a: Sequence[float], b: Sequence[float], *, names, scale: float,
                    unit: str, higher_is_better: bool, headline: bool, paper: str, seeds: Sequence[int] | None,
                    failed_below: float | None, failed_above: float | None) -> Claim:
    """:func:`compare` with ``paired=True``: the verdict rests on the per-seed differences ``a[i] - b[i]``."""
    a, b = (np.asarray(list(v), dtype=float).reshape(-1) for v in (a, b))
    if a.size != b.size:
        raise ValueError(f"{claim_id}: a paired comparison needs one value per seed on both sides, got {a.size} "
                         f"and {b.size}")
    seeds = list(range(a.size)) if seeds is None else list(seeds)
    kept_a, failed_a = _side(a, seeds, f"{claim_id}: {names[0]}", names[0], failed_below, failed_above, scale, unit)
    kept_b, failed_b = _side(b, seeds, f"{claim_id}: {names[1]}", names[1], failed_below, failed_above, scale, unit)
    ok = np.array([_failure(x, failed_below, failed_above, scale, unit) is None and
                   _failure(y, failed_below, failed_above, scale, unit) is None for x, y in zip(a, b)], dtype=bool)
    failed = failed_a + failed_b
    sign = 1.0 if higher_is_better else -1.0
    gain = sign * (a[ok] - b[ok])        # > 0: a better than b on that seed
    if gain.size < 2:
        verdict = "within noise"         # one pair cannot tell noise from a difference
    elif gain.min() > 0:
        verdict = "holds"
    elif gain.max() < 0:
        verdict = "reversed"
    else:
        verdict = "within noise"
    wins = f"{names[0]} better on {int((gain > 0).sum())} of {gain.size} seeds"
    evidence = (f"{wins}, by {_range(gain, scale, unit)}; {names[0]} {_range(kept_a, scale, unit)} vs {names[1]} "
                f"{_range(kept_b, scale, unit)}")
    return Claim(claim_id, statement, verdict, _with_failed(evidence, failed), int(gain.size), headline, paper,
                 tuple(failed))


def bound(claim_id: str, statement: str, values: Sequence[float], threshold: float, *, name: str = "value",
          above: bool = True, scale: float = 100.0, unit: str = " %", headline: bool = False, paper: str = "",
          seeds: Sequence[int] | None = None, failed_below: float | None = None,
          failed_above: float | None = None) -> Claim:
    """Is every seed's value above (``above=True``) or below ``threshold`` (same units as ``values``)?

    ``headline``, ``paper``, ``seeds``, ``failed_below`` and ``failed_above`` work as in :func:`compare`: failed runs
    (non-finite, below ``failed_below``, above ``failed_above``) are left out and named; fewer than two values left
    after excluding them give ``within noise``.

    Raises:
        ValueError: ``values`` is empty or has no finite value; a headline claim without ``paper``.
    """
    _check_headline(claim_id, headline, paper)
    values, failed = _side(values, seeds, f"{claim_id}: {name}", name, failed_below, failed_above, scale, unit)
    sign = 1.0 if above else -1.0
    if failed and values.size < 2:
        verdict = "within noise"
    elif (sign * values).min() > sign * threshold:
        verdict = "holds"
    elif (sign * values).max() < sign * threshold:
        verdict = "reversed"
    else:
        verdict = "within noise"
    evidence = _with_failed(f"{name} {_range(values, scale, unit)}, threshold {'>' if above else '<'} "
                            f"{scale * threshold:.1f}{unit}", failed)
    return Claim(claim_id, statement, verdict, evidence, int(values.size), headline, paper, tuple(failed))


# ----------------------------------------------------------------------------------------------------------------
# Display

_ICON = {"holds": "✔ holds", "within noise": "≈ within noise", "reversed": "✘ reversed"}


def _ordered(claims: Iterable[Claim]) -> list[Claim]:
    """Headline claims first, each group in the order given."""
    claims = list(claims)
    return [c for c in claims if c.headline] + [c for c in claims if not c.headline]


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (no pipes, no line breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def to_markdown(claims: Iterable[Claim], title: str = "What this run says") -> str:
    """The markdown table :func:`show` displays: columns ``id | claim | paper | verdict | evidence``, headline claims
    first (statement in bold, marked ★), in the order given."""
    lines = [f"**{title}**", "", "| id | claim | paper | verdict | evidence |", "|---|---|---|---|---|"]
    for c in _ordered(claims):
        statement = f"**{HEADLINE_MARK} {_cell(c.statement)}**" if c.headline else _cell(c.statement)
        lines.append(f"| `{_cell(c.id)}` | {statement} | {_cell(c.paper)} | {_ICON[c.verdict]} | "
                     f"{_cell(c.evidence)} |")
    return "\n".join(lines)


def to_text(claims: Iterable[Claim], title: str = "What this run says") -> str:
    """The plain-text rendering :func:`show` displays: one line per claim (verdict, id, statement, evidence),
    headline claims first and marked ★, with the paper's number on the next line."""
    lines = [title]
    for c in _ordered(claims):
        mark = f"{HEADLINE_MARK} " if c.headline else ""
        lines.append(f"  {_ICON[c.verdict]:<16} {mark}[{c.id}] {c.statement}: {c.evidence}")
        if c.paper:
            lines.append(f"  {'':<16} paper: {c.paper}")
    return "\n".join(lines)


def show(claims: Iterable[Claim], title: str = "What this run says") -> list[Claim]:
    """Display the claims as a table (readable as plain text too) and record them for the notebook tests.

    Returns the claims in the order given; the table lists headline claims first."""
    from IPython.display import display

    claims = list(claims)
    display({"text/markdown": to_markdown(claims, title), "text/plain": to_text(claims, title),
             MIMETYPE: json.dumps([asdict(c) for c in _ordered(claims)])}, raw=True)
    return claims
