"""``flask_uow.__version__``: the installed distribution's version, from its metadata.

The version is written once, in ``pyproject.toml``. An installed flask-uow (a wheel, or
``pip install -e``) reads it from the package metadata; a source tree put on ``sys.path``
without installing reads it from the ``pyproject.toml`` beside ``src/``.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "flask-uow"
_PYPROJECT = Path(__file__).resolve().parent.parent.parent / "pyproject.toml"


def read_version() -> str:
    """The version of the installed ``flask-uow``, or of the source tree it runs from."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return source_tree_version(_PYPROJECT)


def source_tree_version(pyproject: Path) -> str:
    """The ``[project] version`` of ``pyproject``, or ``"0+unknown"`` when there is none."""
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "0+unknown"
    return str(project.get("version", "0+unknown"))


__version__ = read_version()
