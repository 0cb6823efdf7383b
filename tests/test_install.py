"""The install is quiet: building the package prints no warning (``make run`` and ``make
test`` build it on a fresh machine, in front of a new user)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def source(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    shutil.copytree(ROOT, folder, ignore=shutil.ignore_patterns(
        ".venv", ".git", "var", "*.egg-info", "build", ".pytest_cache", "__pycache__",
        ".hypothesis", ".mypy_cache", ".ruff_cache", "tests", "bench", "plugin-stub"))
    return folder


def test_building_the_package_prints_no_warning(tmp_path: Path) -> None:
    folder = source(tmp_path)

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                            "--disable-pip-version-check", str(folder), "-w", str(tmp_path)],
                           capture_output=True, text=True, timeout=300, check=False)

    assert 0 == built.returncode, built.stderr
    assert "" == built.stdout + built.stderr


def test_the_editable_install_make_does_prints_no_warning(tmp_path: Path) -> None:
    folder = source(tmp_path)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")],
                   check=True, timeout=120)

    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(tmp_path / "venv" / "bin" / "python"),
         "install", "--no-deps", "--quiet", "--disable-pip-version-check", "-e", str(folder)],
        capture_output=True, text=True, timeout=300, check=False)

    assert 0 == installed.returncode, installed.stderr
    assert "" == installed.stdout + installed.stderr
