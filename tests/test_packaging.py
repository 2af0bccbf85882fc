"""Packaging: one import name, every package in the wheel, and a wheel that predicts outside the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"engine": "asinfer.engine", "trainer": "asinfer.trainer", "benchmarks": "asinfer.benchmarks"}


def _listed_packages() -> set[str]:
    """The [tool.setuptools] packages list of pyproject.toml (tomllib is Python 3.11+; this runs on 3.10)."""
    block = re.search(r"^packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    assert block, "pyproject.toml has no [tool.setuptools] packages list"
    return set(re.findall(r'"([\w.]+)"', block.group(1)))


def test_every_package_in_the_tree_is_listed_for_the_wheel():
    listed = _listed_packages()
    found = {FOLDERS[init.relative_to(ROOT).parts[0]] + "".join(f".{p}" for p in init.relative_to(ROOT).parts[1:-1])
             for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_sources_import_the_packages_by_their_installed_name():
    """`import engine` would work from the checkout only, and load a second copy of the engine."""
    bare = re.compile(r"^\s*(from|import)\s+(engine|trainer|benchmarks)\b", re.M)
    offenders = [f"{path.relative_to(ROOT)}" for folder in [*FOLDERS, "tests"]
                 for path in (ROOT / folder).rglob("*.py") if bare.search(path.read_text(encoding="utf-8"))]
    assert not offenders, f"import asinfer.engine / asinfer.trainer / asinfer.benchmarks in {offenders}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("asinfer-*.whl")
    return path


def test_wheel_installs_one_top_level_name_and_carries_the_default_model(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"asinfer"}
    assert "asinfer/models/asinfer-vgg16-phantom/manifest.json" in names
    assert "asinfer/models/asinfer-vgg16-phantom/model.int8.onnx" in names
    assert "asinfer/engine/cli.py" in names and "asinfer/trainer/convert/__init__.py" in names


def test_installed_wheel_predicts_with_the_shipped_model_from_another_folder(wheel, tmp_path):
    """A plain (not editable) install, run away from the checkout: the default model comes from the wheel."""
    venv = tmp_path / "fresh venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies (numpy, onnxruntime, ...) come from this environment's site-packages, read through a
    # .pth line: its .pth files are not processed, so the editable asinfer of this checkout stays invisible.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "--no-deps", "-q", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    sample = ROOT / "docs" / "samples" / "negative" / "P0000_s00.dcm"
    env = {k: v for k, v in os.environ.items() if k not in ("ASINFER_MODEL", "PYTHONPATH")}
    done = subprocess.run([venv / "bin" / "asinfer", "predict", str(sample), "-f", "json"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"name": "asinfer-vgg16-phantom"' in done.stdout and '"probability": ' in done.stdout
    where = subprocess.run([venv / "bin" / "python", "-c", "import asinfer.engine as e; print(e.default_model())"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(site), where  # the wheel's copy, not the checkout's
