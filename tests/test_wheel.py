"""The wheel, installed with its extras into a fresh virtualenv, runs the README's examples.

A file left out of the wheel, or a dependency declared only in the ``test`` extra, passes
every other test (they run on the editable install with the test extra) and fails here.
The virtualenv and the examples live outside the source tree, and the examples run with
no ``PYTHONPATH``, so they can only import the installed wheel. Installing needs PyPI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.build_once import build_once
from tests.test_docs import Block, read_blocks

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Every extra a user may install; `test`, `bench` and `docs` are the project's own.
USER_EXTRAS = sorted(set(PROJECT["optional-dependencies"]) - {"test", "bench", "docs"})


@dataclass
class Installed:
    """A virtualenv with the wheel installed, and a folder to run examples in."""

    python: Path
    folder: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        environ = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PYTHON", "COV_", "COVERAGE", "PYTEST", "VIRTUAL_ENV"))
        }
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.folder,
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def run_script(self, name: str, source: str) -> subprocess.CompletedProcess[str]:
        (self.folder / name).write_text(source)
        result = self.run(name)
        assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel, make a virtualenv, and install the wheel with every user extra."""

    def build(environment: Path) -> None:
        dist = tmp_path_factory.mktemp("dist")
        built = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
            capture_output=True,
            text=True,
        )
        assert built.returncode == 0, built.stdout + built.stderr
        (wheel,) = dist.glob("flask_uow-*.whl")
        venv.create(environment, with_pip=True, clear=True)
        requirement = f"flask-uow[{','.join(USER_EXTRAS)}] @ {wheel.as_uri()}"
        pip = subprocess.run(
            [
                environment / "bin" / "python",
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ],
            capture_output=True,
            text=True,
        )
        assert pip.returncode == 0, pip.stdout + pip.stderr

    environment = build_once(tmp_path_factory, "wheel-venv", build)
    return Installed(environment / "bin" / "python", tmp_path_factory.mktemp("app"))


def readme_blocks() -> list[Block]:
    return [block for block in read_blocks(ROOT / "README.md") if block.language == "python"]


def test_the_installed_package_is_the_wheel_of_this_version(installed: Installed) -> None:
    result = installed.run_script(
        "where.py",
        "import pathlib, flask_uow\n"
        "package = pathlib.Path(flask_uow.__file__).parent\n"
        "print(package)\n"
        "print(flask_uow.__version__)\n"
        "print((package / 'py.typed').is_file())\n",
    )
    location, version, typed = result.stdout.split()
    assert Path(location).is_relative_to(installed.python.parent.parent)
    assert not Path(location).is_relative_to(ROOT)
    assert version == PROJECT["version"]
    assert typed == "True"


def test_every_public_module_imports_from_the_installed_wheel(installed: Installed) -> None:
    """Each extra brings what its module needs: OpenTelemetry, the toolbar, Quart."""
    import flask_uow

    modules = ["testing", "pagination", "otel", "debugtoolbar", "_quart"]
    source = "import flask_uow\n" + "".join(f"import flask_uow.{name}\n" for name in modules)
    source += "".join(f"flask_uow.{name}\n" for name in flask_uow.__all__)
    installed.run_script("imports.py", source)


def test_the_readme_quick_start_runs_from_the_installed_wheel(installed: Installed) -> None:
    (quick_start,) = [block for block in readme_blocks() if "fixtures" in block.options]
    assert quick_start.options["fixtures"] == "models"
    # The block's fixture: the Base and Account of the docs' models, as a module of its own.
    shutil.copy(ROOT / "tests" / "docs_support" / "models.py", installed.folder / "models.py")
    result = installed.run_script(
        "quick_start.py", "from models import Account, Base\n\n" + quick_start.source
    )
    assert "account 1 closed" in result.stdout
    # A relative SQLite path lands in the Flask app's instance folder, beside the script.
    assert (installed.folder / "instance" / "quickstart.db").is_file()


def test_the_readme_async_example_runs_from_the_installed_wheel(installed: Installed) -> None:
    blocks = readme_blocks()
    (index,) = [i for i, block in enumerate(blocks) if "continue" in block.options]
    service, async_service = blocks[index - 1], blocks[index]
    assert "async def" in async_service.source
    script = (
        service.source
        + "\n"
        + async_service.source
        + (
            "\nwith db.unit_of_work(read_only=True):\n"
            "    from sqlalchemy import select\n"
            "    print(sorted(db.session.scalars(select(Customer.name))))\n"
        )
    )
    result = installed.run_script("async_example.py", script)
    assert "'Grace'" in result.stdout
