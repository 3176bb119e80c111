"""Graded assignments from the chapter notebooks, in nbgrader's format, without a course database.

Every chapter notebook in ``notebooks/`` is an nbgrader *source* (instructor) notebook: its graded exercises are a
solution cell (answer between ``### BEGIN SOLUTION`` / ``### END SOLUTION``) followed by a check cell (visible
asserts, then hidden tests between ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``), each carrying nbgrader's
cell metadata (``grade_id``, ``points``, ...). The format is described in ``docs/assignments.md``.

* :func:`build` writes the student copies with nbgrader's own preprocessors, in the order of nbgrader's
  ``generate_assignment`` (less the two steps that need a course database or header files): solutions replaced by
  a stub, hidden tests and mark schemes removed, outputs cleared, grade cells locked, checksums recorded.
* :func:`grade` restores the instructor's check cells (hidden tests included) into a completed student notebook,
  as nbgrader's ``OverwriteCells`` does from its database, executes it in a fresh kernel in quick mode
  (``LTH_QUICK=1``) with a per-cell timeout, and scores every check cell with nbgrader's own rule
  (``nbgrader.utils.determine_grade``: an error or stderr output gives 0 points, otherwise full points).
* :func:`exercise_notebook` cuts a notebook down to its exercise cells and the earlier cells they need (found by
  name analysis), for a fast check of the exercises alone.

nbgrader is an optional dependency (the ``teaching`` extra); it is imported only when a function needs it.

Command line::

    lth assignments build [--out DIR] [NOTEBOOK ...]
    lth assignments grade NOTEBOOK [--timeout S] [--source DIR]
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

__all__ = ["SOURCE_DIR", "Exercise", "Report", "read_notebook", "graded_cells", "metadata_problems", "student_copy",
           "build",
           "grade", "exercise_notebook", "format_report", "add_cli"]

#: the instructor notebooks (nbgrader's ``source`` directory for one assignment).
SOURCE_DIR = Path(__file__).resolve().parent.parent / "notebooks"

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_MARKERS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def _nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _is_check(cell) -> bool:
    meta = _nbgrader_meta(cell)
    return bool(meta.get("grade")) and not meta.get("solution") and cell.get("cell_type") == "code"


def _is_solution(cell) -> bool:
    return bool(_nbgrader_meta(cell).get("solution"))


def graded_cells(nb) -> list[tuple[int, dict]]:
    """``[(index, cell)]`` of every cell carrying nbgrader metadata, in notebook order."""
    return [(i, c) for i, c in enumerate(nb["cells"]) if _nbgrader_meta(c)]


def read_notebook(path):
    """nbformat.read, quiet about cells without ids (our notebooks use nbformat 4 minor versions without them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=getattr(nbformat.validator, "MissingIDFieldWarning", UserWarning))
        return nbformat.read(str(path), as_version=4)


def _notebook(nb_or_path):
    if isinstance(nb_or_path, (str, os.PathLike)):
        return read_notebook(nb_or_path)
    return nb_or_path


def metadata_problems(nb_or_path) -> list[str]:
    """What is wrong with a notebook's graded cells (empty list: well formed).

    Checks: nbgrader schema version 3; grade ids present and unique; every check cell locked, with points > 0,
    hidden tests between their markers and directly after a solution cell; every solution cell unlocked, with its
    answer between the solution markers; at least two graded exercises.
    """
    nb = _notebook(nb_or_path)
    problems: list[str] = []
    seen: set[str] = set()
    cells = graded_cells(nb)
    checks = 0
    for i, cell in cells:
        meta = _nbgrader_meta(cell)
        gid = meta.get("grade_id")
        where = f"cell {i} ({gid or 'no grade_id'})"
        source = "".join(cell.get("source", ""))
        if meta.get("schema_version") != 3:
            problems.append(f"{where}: nbgrader schema_version must be 3")
        if not gid:
            problems.append(f"{where}: no grade_id")
        elif gid in seen:
            problems.append(f"{where}: grade_id {gid!r} used twice")
        seen.add(gid)
        for key in ("grade", "solution", "locked", "task"):
            if not isinstance(meta.get(key), bool):
                problems.append(f"{where}: nbgrader metadata {key!r} missing or not a boolean")
        if _is_solution(cell):
            if meta.get("locked"):
                problems.append(f"{where}: a solution cell must not be locked")
            if any(m not in source for m in SOLUTION_MARKERS):
                problems.append(f"{where}: the answer must sit between {SOLUTION_MARKERS[0]!r} and "
                                f"{SOLUTION_MARKERS[1]!r}")
        if _is_check(cell):
            checks += 1
            points = meta.get("points")
            if not isinstance(points, (int, float)) or points <= 0:
                problems.append(f"{where}: a check cell needs points > 0, got {points!r}")
            if not meta.get("locked"):
                problems.append(f"{where}: a check cell must be locked")
            if any(m not in source for m in HIDDEN_MARKERS):
                problems.append(f"{where}: no hidden tests between {HIDDEN_MARKERS[0]!r} and {HIDDEN_MARKERS[1]!r}")
            previous = [c for j, c in cells if j < i]
            if not previous or not _is_solution(previous[-1]):
                problems.append(f"{where}: a check cell must follow a solution cell")
    if checks < 2:
        problems.append(f"{checks} graded exercise(s); every chapter needs at least two")
    return problems


def _preprocessors():
    """nbgrader's ``generate_assignment`` steps that need neither a course database (SaveCells) nor header files."""
    try:
        from nbgrader import preprocessors as pp
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("building student copies needs nbgrader: pip install 'lth_tutorial[teaching]' "
                          "(or pip install nbgrader)") from err
    return [pp.LockCells(), pp.ClearSolutions(), pp.ClearOutput(), pp.CheckCellMetadata(), pp.ComputeChecksums(),
            pp.ClearHiddenTests(), pp.ClearMarkScheme(), pp.ComputeChecksums(), pp.CheckCellMetadata()]


def student_copy(nb_or_path):
    """The student version of an instructor notebook (a new notebook; the argument is left unchanged)."""
    nb = copy.deepcopy(_notebook(nb_or_path))
    resources: dict = {}
    for step in _preprocessors():
        nb, resources = step.preprocess(nb, resources)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = None
    return nb


def _sources(notebooks) -> list[Path]:
    if notebooks is None:
        return sorted(SOURCE_DIR.glob("[0-9][0-9]_*.ipynb"))
    out = []
    for item in notebooks:
        path = Path(item)
        if not path.exists():
            matches = sorted(SOURCE_DIR.glob(f"{item}*.ipynb"))
            if len(matches) != 1:
                raise ValueError(f"no chapter notebook {item!r}: give a path or a chapter number such as '01' "
                                 f"(chapters in {SOURCE_DIR})")
            path = matches[0]
        out.append(path)
    return out


def build(out_dir, notebooks=None) -> list[Path]:
    """Write the student copy of every chapter notebook (or of ``notebooks``: paths or chapter numbers like
    ``"01"``) to ``out_dir`` under the same file name; returns the written paths.

    Raises:
        ValueError: a notebook whose graded cells are malformed (the problems are listed).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in _sources(notebooks):
        problems = metadata_problems(path)
        if problems:
            raise ValueError(f"{path.name}: " + "; ".join(problems))
        target = out_dir / path.name
        nbformat.write(student_copy(path), str(target))
        written.append(target)
    return written


@dataclass
class Exercise:
    """The grade of one check cell: ``points`` of ``max_points``; ``reason`` says why points were lost."""

    grade_id: str
    points: float
    max_points: float
    reason: str = ""


@dataclass
class Report:
    """What :func:`grade` found: one :class:`Exercise` per check cell, and a problem with the whole notebook."""

    notebook: str
    exercises: list[Exercise] = field(default_factory=list)
    problem: str = ""

    @property
    def points(self) -> float:
        return sum(e.points for e in self.exercises)

    @property
    def max_points(self) -> float:
        return sum(e.max_points for e in self.exercises)


def _source_for(student, name: str, source_dir: Path) -> Path | None:
    """The instructor notebook the student notebook was made from: the one of the same file name if its grade ids
    cover the student's, else the one whose grade ids cover them (a student may have deleted a cell)."""
    ids = {_nbgrader_meta(c).get("grade_id") for _, c in graded_cells(student)} - {None}
    if not ids:
        return None
    candidates = sorted(Path(source_dir).glob("*.ipynb"), key=lambda p: (p.name != name, p.name))
    for path in candidates:
        source = read_notebook(path)
        if ids <= {_nbgrader_meta(c).get("grade_id") for _, c in graded_cells(source)}:
            return path
    return None


def _restore_checks(student, source) -> None:
    """Put the instructor's check cells (and metadata of every graded cell) back, as nbgrader's OverwriteCells."""
    by_id = {_nbgrader_meta(c)["grade_id"]: c for _, c in graded_cells(source)}
    for _, cell in graded_cells(student):
        original = by_id[_nbgrader_meta(cell)["grade_id"]]
        cell.metadata["nbgrader"] = copy.deepcopy(original.metadata["nbgrader"])
        if _is_check(original):
            cell.source = original.source
            cell.cell_type = original.cell_type


def _error_of(cell) -> str:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            detail = " ".join(str(out.get("evalue", "")).split())[:200]
            return f"{out.get('ename')}: {detail}" if detail else str(out.get("ename"))
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            return "wrote to stderr: " + " ".join("".join(out.get("text", "")).split())[:200]
    return ""


@contextlib.contextmanager
def _environment(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _execute(nb, timeout: int, cwd: Path) -> str:
    """Run ``nb`` in place in a fresh kernel (errors recorded as outputs); returns a problem line or ''."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(cwd)}})
    with _environment(LTH_QUICK="1"):
        try:
            client.execute()
        except DeadKernelError as err:
            return f"the kernel died ({' '.join(str(err).split())[:200]}); cells after it were not run"
        except Exception as err:  # kernel failed to start, a stalled kernel-info request, ...
            return f"the notebook could not be run ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
    return ""


def grade(notebook_path, timeout: int = 120, source_dir: Path | None = None) -> Report:
    """Grade a completed student notebook; never raises for a bad notebook (see :attr:`Report.problem`).

    Args:
        notebook_path: the student's notebook (a copy made by :func:`build`, filled in).
        timeout: seconds allowed per cell; a cell that takes longer is interrupted (its exercise scores 0).
        source_dir: where the instructor notebooks are (default :data:`SOURCE_DIR`).

    Returns:
        A :class:`Report` with the points per check cell, in notebook order.
    """
    from nbgrader.utils import determine_grade

    path = Path(notebook_path)
    source_dir = Path(source_dir) if source_dir is not None else SOURCE_DIR
    report = Report(notebook=str(path))
    try:
        student = read_notebook(path)
    except Exception as err:
        report.problem = f"not a readable notebook ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
        return report
    source_path = _source_for(student, path.name, source_dir)
    if source_path is None:
        report.problem = ("not one of the chapter assignments: its graded cells (grade ids) match no notebook in "
                          f"{source_dir}")
        return report
    source = read_notebook(source_path)
    _restore_checks(student, source)
    for cell in student.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    report.problem = _execute(student, timeout, source_path.parent)
    previous_solution = None
    for cell in student.cells:
        if _is_solution(cell):
            previous_solution = cell
        if not _is_check(cell):
            continue
        gid = _nbgrader_meta(cell)["grade_id"]
        max_points = float(_nbgrader_meta(cell)["points"])
        if cell.get("execution_count") is None and not cell.get("outputs"):
            report.exercises.append(Exercise(gid, 0.0, max_points, "not run"))
            continue
        points, _ = determine_grade(cell)
        reason = "" if points == max_points else _error_of(cell)
        if reason and previous_solution is not None and _error_of(previous_solution):
            reason += f" (your answer cell failed: {_error_of(previous_solution)})"
        report.exercises.append(Exercise(gid, float(points or 0.0), max_points, reason))
    graded = {e.grade_id for e in report.exercises}
    for _, cell in graded_cells(source):
        gid = _nbgrader_meta(cell)["grade_id"]
        if _is_check(cell) and gid not in graded:
            report.exercises.append(Exercise(gid, 0.0, float(_nbgrader_meta(cell)["points"]),
                                             "its check cell is missing from the notebook"))
    return report


def format_report(report: Report) -> str:
    """Points per exercise, then the last line ``total: X / Y points``."""
    lines = [f"grading {report.notebook}"]
    if report.problem:
        lines.append(f"problem: {report.problem}")
    width = max((len(e.grade_id) for e in report.exercises), default=0)
    for e in report.exercises:
        lines.append(f"  {e.grade_id:<{width}}  {e.points:g} / {e.max_points:g}" + (f"  ({e.reason})" if e.reason
                                                                                       else ""))
    lines.append(f"total: {report.points:g} / {report.max_points:g} points")
    return "\n".join(lines)


# -- a fast check of the exercises alone -------------------------------------------------------------------------

def _python(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell defines, names it reads) of one code cell; magics become Python first."""
    tree = ast.parse(_python(source))
    defined, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (defined if isinstance(node.ctx, (ast.Store, ast.Del)) else used).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    return defined, used - set(dir(builtins))


def exercise_notebook(nb_or_path):
    """A copy of a notebook reduced to its graded cells and the earlier code cells they need.

    The set-up cells (up to the one calling ``setup()``) are always kept; other needed cells are found backwards by
    name: an earlier cell is kept when it defines a name that a kept cell reads (an import, the experiment whose
    result a hidden test compares against). Markdown is dropped.
    """
    nb = copy.deepcopy(_notebook(nb_or_path))
    cells = nb.cells
    first = min(i for i, _ in graded_cells(nb))
    keep = {i for i, c in enumerate(cells) if i >= first and c.cell_type == "code" and _nbgrader_meta(c)}
    set_up = [i for i, c in enumerate(cells[:first]) if c.cell_type == "code" and "setup()" in "".join(c.source)]
    keep |= {i for i in range(set_up[0] + 1 if set_up else 0) if cells[i].cell_type == "code"}
    needed, own = set(), set()
    for i in keep:
        defined, used = _names("".join(cells[i].source))
        needed |= used
        own |= defined
    needed -= own
    for i in range(first - 1, -1, -1):
        cell = cells[i]
        if cell.cell_type != "code":
            continue
        defined, used = _names("".join(cell.source))
        if defined & needed:
            keep.add(i)
            needed = (needed - defined) | used
    nb.cells = [c for i, c in enumerate(cells) if i in keep]
    return nb


# -- command line -------------------------------------------------------------------------------------------------

def add_cli(sub) -> None:
    """Register ``lth assignments build|grade`` on an argparse sub-parsers object."""
    p = sub.add_parser("assignments", help="student copies of the chapters' graded exercises; grade a notebook")
    inner = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    b = inner.add_parser("build", help="write student copies (solutions, hidden tests and outputs removed)")
    b.add_argument("--out", type=Path, default=Path("release"), help="folder for the student copies")
    b.add_argument("notebooks", nargs="*", help="chapter numbers (e.g. 01) or notebook paths; default all")
    g = inner.add_parser("grade", help="run a completed student notebook and print points per exercise")
    g.add_argument("notebook", type=Path, help="the student's .ipynb")
    g.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell (default 120)")
    g.add_argument("--source", type=Path, help=f"folder of the instructor notebooks (default {SOURCE_DIR})")
    p.set_defaults(run=run_cli)


def run_cli(args) -> int:
    """``lth assignments ...``; returns the exit status (grade: 0 when graded, 1 for a notebook it cannot grade)."""
    if args.action == "build":
        for path in build(args.out, args.notebooks or None):
            print(f"wrote {path}")
        return 0
    report = grade(args.notebook, timeout=args.timeout, source_dir=args.source)
    print(format_report(report))
    return 1 if report.problem and not report.exercises else 0
