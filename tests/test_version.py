"""``flask_uow.__version__`` is the version written once, in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

from flask_uow import _version
from flask_uow._version import source_tree_version

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_the_one_in_pyproject_toml() -> None:
    import flask_uow

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert flask_uow.__version__ == project["version"]


def test_without_package_metadata_the_version_comes_from_the_source_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(_version, "version", not_installed)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _version.read_version() == project["version"]


def test_a_source_tree_that_is_not_installed_reads_its_pyproject_toml(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "flask-uow"\nversion = "9.8.7"\n')
    assert source_tree_version(pyproject) == "9.8.7"


def test_a_tree_without_a_readable_version_says_it_is_unknown(tmp_path: Path) -> None:
    assert source_tree_version(tmp_path / "missing.toml") == "0+unknown"
    broken = tmp_path / "pyproject.toml"
    broken.write_text("[project\n")
    assert source_tree_version(broken) == "0+unknown"
    broken.write_text('[tool.other]\nversion = "1"\n')
    assert source_tree_version(broken) == "0+unknown"


def test_reading_the_version_imports_neither_sqlalchemy_nor_flask() -> None:
    code = "import sys, flask_uow; flask_uow.__version__; print(sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "'sqlalchemy'" not in result.stdout
    assert "'flask'" not in result.stdout
