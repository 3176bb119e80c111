"""Colab: installing the package with its notebook extra leaves the torch that is already there alone.

Offline: a fresh virtual environment sees this environment's packages through a ``.pth`` file, plus a torch (and
torchvision) of a different version (an installed-package record only, shadowing ours). pip then resolves
``lth_tutorial[notebooks]`` from a copy of ``pyproject.toml`` with ``--no-index --dry-run``: any wish to replace
torch would show in its install report (or fail, with no index to fetch from).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OTHER_TORCH = "2.1.0"   # not the version this environment runs (see environment.yml), and >= the package's floor
OTHER_TORCHVISION = "0.16.0"   # its companion (each torchvision pins one torch, as on Colab)


def _fake_distribution(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def test_notebook_extra_leaves_an_installed_torch_alone(tmp_path):
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")   # pip, setuptools, the other deps
    _fake_distribution(site, "torch", OTHER_TORCH)
    _fake_distribution(site, "torchvision", OTHER_TORCHVISION)

    project = tmp_path / "project"
    (project / "lth_tutorial").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", project)
    shutil.copy(ROOT / "README.md", project)
    (project / "lth_tutorial" / "__init__.py").write_text("")

    seen = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    assert seen == OTHER_TORCH, "the test environment must see the other torch first"

    report = tmp_path / "report.json"
    done = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
                           "--disable-pip-version-check", "--quiet", "--report", str(report),
                           f"{project}[notebooks]"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, f"pip could not resolve the notebook extra offline:\n{done.stdout}\n{done.stderr}"
    installs = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    for name in ("torch", "torchvision"):
        assert name not in installs, f"installing the package would replace {name} by {installs[name]}"
    assert set(installs) == {"lth_tutorial"}, f"only the package itself should be new here, got {sorted(installs)}"


def test_notebooks_install_the_package_without_touching_torch():
    """The Colab set-up cell of every chapter installs only the package (its requirements leave torch unpinned)."""
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        setup = next("".join(c["source"]) for c in cells if "google.colab" in "".join(c["source"]))
        install = [line for line in setup.splitlines() if "pip install" in line]
        assert len(install) == 1 and "lth_tutorial[notebooks]" in install[0], path.name
        assert "torch" not in install[0].replace("lth_tutorial", ""), f"{path.name} installs torch itself"
