"""Execute a notebook in a fresh kernel and collect every error, including those raised in widget callbacks.

Errors inside ipywidgets callbacks do not fail the cell that triggered them; they end up as outputs of Output
widgets (stored in the notebook's widget state) or as stderr text. :func:`execute` scans all of these.

The executed notebook's prose is then checked against its own run: :func:`prose_problems` (tagged claims must hold,
no typed results) and :func:`headline_problems` (a headline claim this run does not confirm needs a
``<!-- not-at-cpu-scale: ID -->`` block and an entry in docs/findings.md).
"""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ERROR_MARKERS = ("Traceback (most recent call last)", "Error:", "Exception:")


def _output_errors(outputs, where: str) -> list[str]:
    found = []
    for out in outputs or []:
        kind = out.get("output_type")
        if kind == "error":
            found.append(f"{where}: {out.get('ename')}: {out.get('evalue')}")
        elif kind == "stream" and out.get("name") == "stderr":
            text = "".join(out.get("text", ""))
            if "Traceback (most recent call last)" in text:
                found.append(f"{where}: traceback on stderr:\n{text[-2000:]}")
        elif kind in ("display_data", "execute_result"):
            text = json.dumps(out.get("data", {}))
            if "Traceback (most recent call last)" in text:
                found.append(f"{where}: traceback in displayed output")
    return found


def widget_errors(nb) -> list[str]:
    """Errors recorded in the saved widget state (Output widgets' outputs)."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    found = []
    for model_id, model in state.items():
        outputs = model.get("state", {}).get("outputs")
        found += _output_errors(outputs, f"widget {model_id}")
    return found


#: How a kernel that stalls shows itself: a cell (or the kernel-info request) that waits for its reply until the
#: per-cell timeout, or a kernel that dies. Jupyter kernels can miss a shell request that arrives while they send a
#: reply on the same socket (ipykernel issue #1554; seen here with ipykernel 7 and, rarely, 6): the kernel then
#: sits idle. Such a run is retried once in a fresh kernel, with a warning; a notebook whose cell is genuinely too
#: slow times out twice and fails. (nbclient raises AssertionError when the kernel-info request times out.)
KERNEL_STALLS = (CellTimeoutError, DeadKernelError, TimeoutError, AssertionError)


def _cell_seconds(nb) -> dict[int, float]:
    """Seconds each executed code cell took, from nbclient's timing metadata."""
    from datetime import datetime

    out = {}
    for i, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.status.busy" in timing and "shell.execute_reply" in timing:
            start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                          for k in ("iopub.status.busy", "shell.execute_reply"))
            out[i] = (end - start).total_seconds()
    return out


def execute(path: Path, timeout: int = 300, cwd: Path | None = None) -> tuple[object, float, list[str]]:
    """Run the notebook at ``path`` in a fresh kernel; returns ``(executed notebook, seconds, errors)``.

    ``timeout`` is per cell, in seconds. The kernel inherits this process's environment (set LTH_QUICK / LTH_CACHE
    before calling). A run that stalls (:data:`KERNEL_STALLS`) is retried once with a warning naming the cell
    timings; ``seconds`` is the time of the run returned.
    """
    for attempt in (1, 2):
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                                resources={"metadata": {"path": str(cwd or path.parent)}})
        errors: list[str] = []
        start = time.perf_counter()
        try:
            client.execute()
        except CellExecutionError as err:
            errors.append(f"cell failed: {str(err)[-3000:]}")
        except KERNEL_STALLS as err:
            if attempt == 2:
                raise
            cells = _cell_seconds(nb)
            warnings.warn(f"{path.name}: the kernel stalled after {time.perf_counter() - start:.0f} s "
                          f"({type(err).__name__}: {str(err)[:200]}; cells done: {len(cells)}); retrying once in a "
                          f"fresh kernel", RuntimeWarning)
            continue
        seconds = time.perf_counter() - start
        cells = _cell_seconds(nb)
        slowest = sorted(cells.items(), key=lambda kv: -kv[1])[:3]
        report = (f"{path.name}: cells {sum(cells.values()):.1f} s, outside cells (kernel start, stop, waits) "
                  f"{seconds - sum(cells.values()):.1f} s; slowest cells "
                  + ", ".join(f"{i} ({s:.1f} s)" for i, s in slowest))
        print(report)
        if seconds - sum(cells.values()) > 60 or (slowest and slowest[0][1] > timeout / 2):
            warnings.warn(f"slow notebook run: {report}", RuntimeWarning)  # shown in CI's warnings summary
        break
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            errors += _output_errors(cell.get("outputs"), f"cell {i}")
    errors += widget_errors(nb)
    return nb, seconds, errors


TAG = re.compile(r"<!--\s*claim:\s*([\w.-]+)\s*-->")
#: a percentage in a markdown line that speaks of our own run: a typed result the run could contradict.
TYPED_RESULT = re.compile(r"\b\d+(\.\d+)?\s?%")
OWN_RUN = re.compile(r"\b(we get|we got|we measured|our run|ours|this run|in quick mode|quick-mode run|here we get)\b",
                     re.I)


def shown_claims(nb) -> dict[str, dict]:
    """``{id: claim}`` of every claim the executed notebook showed with :func:`lth_tutorial.claims.show`."""
    from lth_tutorial.claims import MIMETYPE

    found = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            payload = out.get("data", {}).get(MIMETYPE)
            if payload:
                for claim in json.loads(payload) if isinstance(payload, str) else payload:
                    found[claim["id"]] = claim
    return found


def tagged_claims(nb) -> list[tuple[int, str]]:
    """``(cell index, claim id)`` of every ``<!-- claim: ID -->`` tag in a markdown cell."""
    return [(i, m.group(1)) for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
            for m in TAG.finditer(cell.source)]


def prose_problems(nb) -> list[str]:
    """Markdown that the run can contradict: a tagged claim that was not shown or did not hold, and typed
    percentages in lines that speak of our own run."""
    claims = shown_claims(nb)
    problems = []
    for i, claim_id in tagged_claims(nb):
        if claim_id not in claims:
            problems.append(f"markdown cell {i} relies on claim {claim_id!r}, which no cell showed")
        elif claims[claim_id]["verdict"] != "holds":
            c = claims[claim_id]
            problems.append(f"markdown cell {i} relies on claim {claim_id!r} ({c['statement']}), but this run says "
                            f"{c['verdict']}: {c['evidence']}")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if TYPED_RESULT.search(line) and OWN_RUN.search(line):
                problems.append(f"markdown cell {i} types a result of our run: {line.strip()[:160]!r}")
    return problems

#: a markdown cell saying that a headline claim does not show at CPU scale (see :mod:`lth_tutorial.claims`).
NOT_AT_CPU_SCALE = re.compile(r"<!--\s*not-at-cpu-scale:\s*([\w.-]+)\s*-->")
#: the command that runs a claim at scale: a line or inline code starting with ``lth `` (optionally after ``$ `` or
#: ``!``), or ``LTH_QUICK=0`` / ``QUICK = False`` anywhere.
AT_SCALE_COMMAND = re.compile(r"(^[ \t]*(\$[ \t]*|!)?lth[ \t]|`(\$[ \t]*|!)?lth[ \t]|LTH_QUICK=0|\bQUICK\s*=\s*False)",
                              re.M)
FINDINGS = "docs/findings.md"


def not_at_cpu_scale_blocks(nb) -> dict[str, int]:
    """``{claim id: markdown cell index}`` of every ``<!-- not-at-cpu-scale: ID -->`` tag (the first cell per id)."""
    blocks: dict[str, int] = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for m in NOT_AT_CPU_SCALE.finditer(cell.source):
                blocks.setdefault(m.group(1), i)
    return blocks


def headline_claims(nb) -> dict[str, dict]:
    """``{id: claim}`` of the headline claims the executed notebook showed."""
    return {cid: c for cid, c in shown_claims(nb).items() if c.get("headline")}


def headline_count(nb) -> int:
    """How many distinct headline claims the executed notebook showed."""
    return len(headline_claims(nb))


def _mentions(text: str, claim_id: str) -> bool:
    """Does ``text`` name ``claim_id`` as a whole word (not as part of a longer id)?"""
    return re.search(rf"(?<![\w.-]){re.escape(claim_id)}(?![\w-])", text) is not None


def headline_problems(nb, findings_text: str) -> list[str]:
    """Headline claims that this run does not confirm and the chapter does not account for.

    For every shown headline claim whose verdict is not ``holds``: a problem unless a markdown cell carries
    ``<!-- not-at-cpu-scale: ID -->``, that cell links ``docs/findings.md`` and gives the command that runs the
    claim at scale (:data:`AT_SCALE_COMMAND`), and ``findings_text`` (the contents of docs/findings.md) names the
    id. Also a problem: a block naming an id that no cell showed as a headline claim.
    """
    headlines = headline_claims(nb)
    blocks = not_at_cpu_scale_blocks(nb)
    problems = []
    for claim_id, c in headlines.items():
        if c["verdict"] == "holds":
            continue
        what = (f"headline claim {claim_id!r} ({c['statement']}; paper: {c.get('paper', '')}) is {c['verdict']} "
                f"in this run ({c['evidence']})")
        if claim_id not in blocks:
            problems.append(f"{what}, and no markdown cell says so: add a cell tagged "
                            f"<!-- not-at-cpu-scale: {claim_id} --> that links {FINDINGS} and gives the command "
                            f"that runs it at scale")
            continue
        i = blocks[claim_id]
        source = nb.cells[i].source
        if FINDINGS not in source:
            problems.append(f"{what}: its not-at-cpu-scale block (markdown cell {i}) does not link {FINDINGS}")
        if not AT_SCALE_COMMAND.search(source):
            problems.append(f"{what}: its not-at-cpu-scale block (markdown cell {i}) gives no command that runs it "
                            f"at scale (an `lth ...` command, LTH_QUICK=0 or QUICK = False)")
        if not _mentions(findings_text, claim_id):
            problems.append(f"{what}: {FINDINGS} does not report it (the id {claim_id!r} is not named there)")
    for claim_id, i in blocks.items():
        if claim_id not in headlines:
            problems.append(f"markdown cell {i} says headline claim {claim_id!r} does not show at CPU scale, but no "
                            f"cell showed a headline claim with that id")
    return problems
