"""Chapter 01 in a real browser: JupyterLab served by this test on localhost, driven through Playwright with Debian's
chromium. All cells run in quick mode; then the IMP panel's rounds slider is moved, *Run* is pressed, and the test
checks that the widgets rendered (no "Loading widget" placeholder, no error output) and that the panel's figure
changed (screenshots before and after differ). Screenshots go to ``$LTH_SCREENSHOTS`` (default: the test's temporary
folder); the test names the folder in its output. It fails, never skips, when the browser cannot start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "01_lottery_tickets.ipynb"
CHROMIUM = os.environ.get("LTH_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
TOKEN = "lth-browser-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on localhost serving a copy of chapter 01; yields its URL."""
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    port = _free_port()
    env = dict(os.environ, LTH_QUICK="1", LTH_CACHE=str(tmp_path / "cache"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
         "--allow-root"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text())
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wait_idle(page, timeout_s: float) -> None:
    """Until the kernel is idle and no cell waits to run (no ``[*]`` prompt)."""
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.context.sessionContext.session.kernel.status === 'idle'"
        " && ![...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))",
        timeout=timeout_s * 1000)


@pytest.mark.notebook
def test_chapter01_panel_in_a_real_browser(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("LTH_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {shots}")
    started = time.time()
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        except Exception as err:  # fail, never skip: the browser is part of what CI checks
            pytest.fail(f"chromium could not start ({CHROMIUM}); install Debian's chromium package: {err}")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab}/lab/tree/{NOTEBOOK}?token={TOKEN}")
        page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.context?.sessionContext.session"
                               "?.kernel?.status === 'idle'", timeout=90_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        _wait_idle(page, 400)

        text = page.inner_text(".jp-Notebook")
        assert "Loading widget" not in text, "a widget was not rendered"
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
        assert not tracebacks, tracebacks[0][:2000]

        rounds = page.locator(".widget-slider", has=page.locator("label", has_text="rounds")).last
        rounds.scroll_into_view_if_needed()
        panel = rounds.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][last()]")
        figure = panel.locator("img, canvas, svg").last
        figure.wait_for(timeout=30_000)
        panel.screenshot(path=str(shots / "01_panel_before.png"))
        before = shots / "01_figure_before.png"
        figure.screenshot(path=str(before))

        value = rounds.locator(".widget-readout")
        old = value.inner_text()
        handle = rounds.locator(".noUi-handle").first
        handle.focus()
        handle.press("ArrowLeft")
        page.wait_for_function("([el, old]) => el.textContent.trim() !== old",
                               arg=[value.element_handle(), old.strip()], timeout=10_000)
        panel.locator("button", has_text="Run").click()
        page.wait_for_timeout(500)
        page.wait_for_function("(el) => !el.disabled",
                               arg=panel.locator("button", has_text="Run").element_handle(), timeout=300_000)
        _wait_idle(page, 120)
        panel.screenshot(path=str(shots / "01_panel_after.png"))
        after = shots / "01_figure_after.png"
        panel.locator("img, canvas, svg").last.screenshot(path=str(after))
        page.screenshot(path=str(shots / "01_page.png"), full_page=False)
        panel_text = panel.inner_text()
        browser.close()
    assert "failed" not in panel_text and "Traceback" not in panel_text, panel_text[-2000:]
    assert "done" in panel_text, panel_text[-2000:]
    assert before.read_bytes() != after.read_bytes(), "the panel's figure did not change after Run"
    print(f"browser test: {time.time() - started:.1f} s")
