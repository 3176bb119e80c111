"""A chapter's claims, computed from its own run and judged against the spread over seeds.

Markdown never carries a number of our run: numbers differ between CPUs and seeds. A chapter states what the paper
found in prose, then a code cell computes *this* run's verdict with :func:`compare` (A better than B?) or
:func:`bound` (A above a threshold?) over several seeds and shows it with :func:`show`:

* ``holds``: the claim is true for every seed (min-max bars do not overlap: ``min(A) > max(B)``);
* ``reversed``: the opposite is true for every seed;
* ``within noise``: the seeds disagree (the bars overlap), so this run cannot tell.

A markdown cell that relies on a claim tags it with an HTML comment, ``<!-- claim: ID -->`` (invisible when
rendered); the notebook test executes the chapter and fails unless every tagged claim was shown with the verdict
``holds``. Untagged claims are shown for the reader, whatever their verdict, and the prose around them must be worded
so that any verdict reads correctly ("the table says whether this run agrees").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Claim", "compare", "bound", "show", "MIMETYPE", "VERDICTS"]

#: the output type under which :func:`show` records the claims in the executed notebook (read by the tests).
MIMETYPE = "application/vnd.lth-tutorial.claims+json"
VERDICTS = ("holds", "within noise", "reversed")


@dataclass(frozen=True)
class Claim:
    """One claim and its verdict on this run.

    Attributes:
        id: a stable name, referenced from markdown as ``<!-- claim: ID -->``.
        statement: what is claimed, in words (e.g. "the ticket beats random re-initialisation at 5 % density").
        verdict: one of :data:`VERDICTS`.
        evidence: the computed numbers behind the verdict (ranges over seeds).
        seeds: how many seeds (values per side) the verdict rests on.
    """

    id: str
    statement: str
    verdict: str
    evidence: str
    seeds: int

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"

    def __str__(self) -> str:
        return f"[{self.verdict}] {self.statement} -- {self.evidence}"


def _values(values: Iterable[float], what: str) -> np.ndarray:
    array = np.asarray(list(values), dtype=float).reshape(-1)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"{what} needs at least one finite value per seed, got {array.tolist()}")
    return array


def _range(values: np.ndarray, scale: float, unit: str) -> str:
    low, high = scale * values.min(), scale * values.max()
    if values.size == 1:
        return f"{low:.1f}{unit}"
    return f"{scale * values.mean():.1f}{unit} (min-max {low:.1f}-{high:.1f}{unit}, {values.size} seeds)"


def compare(claim_id: str, statement: str, a: Sequence[float], b: Sequence[float], *, names=("A", "B"),
            scale: float = 100.0, unit: str = " %", higher_is_better: bool = True) -> Claim:
    """Is ``a`` better than ``b`` for every seed? ``a`` and ``b`` hold one value per seed (e.g. accuracies as
    fractions; ``scale``/``unit`` only format the evidence). With ``higher_is_better=False`` lower wins (errors,
    losses, instabilities)."""
    a, b = _values(a, f"{claim_id}: {names[0]}"), _values(b, f"{claim_id}: {names[1]}")
    sign = 1.0 if higher_is_better else -1.0
    if (sign * a).min() > (sign * b).max():
        verdict = "holds"
    elif (sign * a).max() < (sign * b).min():
        verdict = "reversed"
    else:
        verdict = "within noise"
    evidence = f"{names[0]} {_range(a, scale, unit)} vs {names[1]} {_range(b, scale, unit)}"
    return Claim(claim_id, statement, verdict, evidence, int(min(a.size, b.size)))


def bound(claim_id: str, statement: str, values: Sequence[float], threshold: float, *, name: str = "value",
          above: bool = True, scale: float = 100.0, unit: str = " %") -> Claim:
    """Is every seed's value above (``above=True``) or below ``threshold``?"""
    values = _values(values, f"{claim_id}: {name}")
    sign = 1.0 if above else -1.0
    if (sign * values).min() > sign * threshold:
        verdict = "holds"
    elif (sign * values).max() < sign * threshold:
        verdict = "reversed"
    else:
        verdict = "within noise"
    evidence = (f"{name} {_range(values, scale, unit)}, threshold {'>' if above else '<'} "
                f"{scale * threshold:.1f}{unit}")
    return Claim(claim_id, statement, verdict, evidence, int(values.size))


def show(claims: Iterable[Claim], title: str = "What this run says") -> list[Claim]:
    """Display the claims as a table (readable as plain text too) and record them for the notebook tests."""
    from IPython.display import display

    claims = list(claims)
    icon = {"holds": "✔ holds", "within noise": "≈ within noise", "reversed": "✘ reversed"}
    lines = [f"**{title}**", "", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c.statement} | {icon[c.verdict]} | {c.evidence} |" for c in claims]
    markdown = "\n".join(lines)
    text = "\n".join([title] + [f"  {icon[c.verdict]:<16} {c.statement}: {c.evidence}" for c in claims])
    display({"text/markdown": markdown, "text/plain": text,
             MIMETYPE: json.dumps([asdict(c) for c in claims])}, raw=True)
    return claims
