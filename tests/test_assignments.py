"""Graded assignments: every chapter's graded cells are well formed, the instructor's solutions pass every check, the
student copies (made by nbgrader's preprocessors) fail every check on the stub and nothing else, no solution text
survives in a student copy, and ``lth assignments grade`` scores a notebook with the exact last line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat
import pytest

from lth_tutorial import assignments, cli

NOTEBOOKS = sorted(assignments.SOURCE_DIR.glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Student copies of every chapter, built once through the command line."""
    out = tmp_path_factory.mktemp("release")
    assert cli.main(["assignments", "build", "--out", str(out)]) == 0
    return out


def _body(source: str, begin: str, end: str) -> list[str]:
    """The non-blank lines between the markers that do not also occur outside them."""
    found, outside, inside = [], set(), False
    for line in source.splitlines():
        if line.strip() == begin:
            inside = True
        elif line.strip() == end:
            inside = False
        elif line.strip():
            (found.append if inside else outside.add)(line.strip())
    return [line for line in found if line not in outside]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_graded_cells_are_well_formed(path):
    assert assignments.metadata_problems(path) == []
    nb = json.loads(path.read_text(encoding="utf-8"))
    ids = [c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"] if "nbgrader" in c["metadata"]]
    assert len(ids) == len(set(ids)) >= 4
    checks = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
    assert len(checks) >= 2 and all(c["metadata"]["nbgrader"]["points"] > 0 for c in checks)
    assert all(c["execution_count"] is None and c["outputs"] == [] for c in nb["cells"] if c["cell_type"] == "code")


def test_malformed_metadata_is_reported():
    nb = assignments.read_notebook(NOTEBOOKS[0])
    check = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
    check.metadata.nbgrader["points"] = 0
    check.metadata.nbgrader["locked"] = False
    check.source = check.source.replace("### BEGIN HIDDEN TESTS", "")
    problems = assignments.metadata_problems(nb)
    assert any("points > 0" in p for p in problems)
    assert any("locked" in p for p in problems)
    assert any("hidden tests" in p for p in problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_student_copy_keeps_no_solution_text(path, release):
    teacher = assignments.read_notebook(path)
    student = assignments.read_notebook(release / path.name)
    assert len(student.cells) == len(teacher.cells)
    text = "\n".join(c.source for c in student.cells)
    for marker in assignments.SOLUTION_MARKERS + assignments.HIDDEN_MARKERS:
        assert marker not in text
    for t, s in zip(teacher.cells, student.cells):
        if s.cell_type == "code":
            assert s.outputs == [] and s.execution_count is None
        meta = t.metadata.get("nbgrader", {})
        if meta.get("solution"):
            assert "raise NotImplementedError()" in s.source
            hidden = _body(t.source, *assignments.SOLUTION_MARKERS)
        elif meta.get("grade"):
            hidden = _body(t.source, *assignments.HIDDEN_MARKERS)
            assert s.metadata.nbgrader["locked"] and s.metadata.nbgrader["points"] == meta["points"]
        else:
            assert s.source == t.source, "cells outside the exercises must be handed out unchanged"
            continue
        student_lines = {line.strip() for line in s.source.splitlines()}
        assert hidden and not [line for line in hidden if line in student_lines]


def _combined(teacher, student):
    """One notebook: the set-up and the cells the exercises need, then the student's graded cells (each check
    must fail on the stub), then the instructor's (each check must pass)."""
    cut = assignments.exercise_notebook(teacher)
    shared = [c for c in cut.cells if not c.metadata.get("nbgrader")]
    def graded(nb, role):
        cells = [copy.deepcopy(c) for c in nb.cells if c.metadata.get("nbgrader")]
        for c in cells:
            c.metadata["role"] = role
        return cells

    combined = copy.deepcopy(cut)
    combined.cells = shared + graded(student, "student") + graded(teacher, "teacher")
    return combined


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_solutions_pass_and_stubs_fail(path, release, monkeypatch, tmp_path):
    """Run in one fresh kernel (quick mode, the set-up and experiment cells the hidden tests need executed once)."""
    monkeypatch.setenv("LTH_CACHE", str(tmp_path / "cache"))
    teacher = assignments.read_notebook(path)
    student = assignments.read_notebook(release / path.name)
    nb = _combined(teacher, student)
    problem = assignments._execute(nb, 240, path.parent)
    assert problem == ""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        errors = [o for o in cell.outputs if o.output_type == "error"]
        name = meta.get("grade_id", cell.source.splitlines()[0])
        if meta.get("grade") and cell.metadata.get("role") == "student":
            assert [e.ename for e in errors] == ["NotImplementedError"], f"{name}: a check must fail on the stub"
        else:
            assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}" if errors else ""
            if meta.get("grade"):
                assert assignments._error_of(cell) == "", f"{name} wrote to stderr"


# -- grading -------------------------------------------------------------------------------------------------------

def _cell(kind, source, **nbgrader):
    cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, **nbgrader}
    return cell


def _tiny_source(folder: Path) -> Path:
    """A two-exercise assignment with the chapters' format (fast to execute)."""
    def solution(gid, body):
        return _cell("code", body, grade=False, grade_id=gid, locked=False, solution=True)

    def check(gid, body, points):
        return _cell("code", body, grade=True, grade_id=gid + "_check", locked=True, points=points, solution=False)

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells = [
        _cell("code", "import os\nbase = 10"),
        solution("double", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        check("double", "assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(base) == 20\n"
                        "### END HIDDEN TESTS", 2),
        solution("square", "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"),
        check("square", "assert square(3) == 9\n### BEGIN HIDDEN TESTS\nassert square(-2) == 4\n"
                        "### END HIDDEN TESTS", 3),
        _cell("code", "print('after the exercises', base)"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "90_tiny.ipynb"
    nbformat.write(nb, str(path))
    return path


def _answer(student_path: Path, answers: dict[str, str], out: Path) -> Path:
    nb = assignments.read_notebook(student_path)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
    nbformat.write(nb, str(out))
    return out


def _grade_cli(capsys, notebook: Path, source: Path | None = None) -> tuple[int, list[str]]:
    argv = ["assignments", "grade", str(notebook), "--timeout", "60"] + (["--source", str(source)] if source else [])
    status = cli.main(argv)
    return status, capsys.readouterr().out.rstrip("\n").splitlines()


def test_grade_scores_each_exercise(tmp_path, capsys):
    source = _tiny_source(tmp_path / "source")
    student = assignments.build(tmp_path / "release", [source])[0]
    assert "return 2 * x" not in student.read_text() and "square(-2)" not in student.read_text()

    # one right; one that passes the visible assert but not the hidden test (the hidden tests come back for grading)
    done = _answer(student, {"double": "def double(x):\n    return x + x",
                             "square": "def square(x):\n    return 9 if x == 3 else 0"}, tmp_path / "90_tiny.ipynb")
    status, lines = _grade_cli(capsys, done, tmp_path / "source")
    assert status == 0 and lines[-1] == "total: 2 / 5 points"
    assert any("double_check" in line and "2 / 2" in line for line in lines)
    assert any("square_check" in line and "0 / 3" in line and "AssertionError" in line for line in lines)

    # the stubs handed out score nothing
    status, lines = _grade_cli(capsys, student, tmp_path / "source")
    assert lines[-1] == "total: 0 / 5 points" and "NotImplementedError" in "\n".join(lines)


def test_grade_reports_bad_input_without_a_traceback(tmp_path, capsys):
    source = _tiny_source(tmp_path / "source")
    student = assignments.build(tmp_path / "release", [source])[0]

    broken = _answer(student, {"double": "def double(x):\n    return 2 * x", "square": "def square(x)\n    return"},
                     tmp_path / "broken.ipynb")
    status, lines = _grade_cli(capsys, broken, tmp_path / "source")
    assert lines[-1] == "total: 2 / 5 points" and "SyntaxError" in "\n".join(lines)

    dying = _answer(student, {"double": "import os\nos._exit(1)"}, tmp_path / "dying.ipynb")
    status, lines = _grade_cli(capsys, dying, tmp_path / "source")
    text = "\n".join(lines)
    assert lines[-1] == "total: 0 / 5 points" and "kernel died" in text and "Traceback" not in text

    stranger = tmp_path / "stranger.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), str(stranger))
    status, lines = _grade_cli(capsys, stranger, tmp_path / "source")
    assert status == 1 and lines[-1] == "total: 0 / 0 points" and "not one of the chapter assignments" in lines[-2]

    garbage = tmp_path / "garbage.ipynb"
    garbage.write_text("{not json")
    status, lines = _grade_cli(capsys, garbage)
    assert status == 1 and lines[-1] == "total: 0 / 0 points" and "not a readable notebook" in "\n".join(lines)


def test_grade_a_chapter_against_the_packaged_notebooks(tmp_path, capsys, release):
    """A chapter's exercise cells, answered with the instructor's solutions, get full marks (graded against
    ``notebooks/``, the default source)."""
    name = "02_rewinding.ipynb"
    teacher = assignments.read_notebook(assignments.SOURCE_DIR / name)
    answers = {c.metadata.nbgrader["grade_id"]: c.source for c in teacher.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    cut = assignments.exercise_notebook(assignments.read_notebook(release / name))
    (tmp_path / "cut").mkdir()
    nbformat.write(cut, str(tmp_path / "cut" / name))
    done = _answer(tmp_path / "cut" / name, answers, tmp_path / name)
    status, lines = _grade_cli(capsys, done)
    points = sum(c.metadata.nbgrader["points"] for c in teacher.cells if c.metadata.get("nbgrader", {}).get("grade"))
    assert status == 0 and lines[-1] == f"total: {points} / {points} points", "\n".join(lines)


def test_build_refuses_an_unknown_chapter(tmp_path):
    with pytest.raises(ValueError, match="chapter number"):
        assignments.build(tmp_path, ["77"])
