"""The notebook runner: a stalled kernel is retried once, a genuine failure is reported, a second stall fails."""

from __future__ import annotations

import nbformat
import pytest
from nbclient.exceptions import CellTimeoutError

import nbrun


def _notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_stalled_kernel_is_retried_once(tmp_path, monkeypatch):
    calls = []

    def fake_execute(self, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise CellTimeoutError("Cell execution timed out")
        return self.nb

    monkeypatch.setattr(nbrun.NotebookClient, "execute", fake_execute)
    with pytest.warns(RuntimeWarning, match="stalled"):
        nb, seconds, errors = nbrun.execute(_notebook(tmp_path), timeout=5)
    assert len(calls) == 2 and errors == []


def test_a_second_stall_fails(tmp_path, monkeypatch):
    def always_stalls(self, **kwargs):
        raise CellTimeoutError("Cell execution timed out")

    monkeypatch.setattr(nbrun.NotebookClient, "execute", always_stalls)
    with pytest.warns(RuntimeWarning), pytest.raises(CellTimeoutError):
        nbrun.execute(_notebook(tmp_path), timeout=5)


def test_a_failing_cell_is_an_error_not_a_retry(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise ValueError('boom')")]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    _, _, errors = nbrun.execute(path, timeout=60)
    assert errors and "boom" in "\n".join(errors)
