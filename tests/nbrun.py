"""Execute a notebook in a fresh kernel and collect every error, including those raised in widget callbacks.

Errors inside ipywidgets callbacks do not fail the cell that triggered them; they end up as outputs of Output
widgets (stored in the notebook's widget state) or as stderr text. :func:`execute` scans all of these.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

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


def execute(path: Path, timeout: int = 600, cwd: Path | None = None) -> tuple[object, float, list[str]]:
    """Run the notebook at ``path``; returns ``(executed notebook, seconds, errors)``.

    The kernel inherits this process's environment (set LTH_QUICK / LTH_CACHE before calling).
    """
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(cwd or path.parent)}})
    errors: list[str] = []
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        errors.append(f"cell failed: {str(err)[-3000:]}")
    seconds = time.perf_counter() - start
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            errors += _output_errors(cell.get("outputs"), f"cell {i}")
    errors += widget_errors(nb)
    return nb, seconds, errors
