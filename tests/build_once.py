"""Artefacts that tests build once per test run, shared by the pytest-xdist workers.

The docs site and the wheel's virtualenv take a minute each to make. Session fixtures run
once per worker, and ``xdist_group`` does not keep their tests on one worker under the
pytest and xdist releases we use, so the first worker builds under a file lock and the
others wait for it and reuse the result.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def build_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """The folder ``name`` of this test run, filled by ``build(folder)`` the first time."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above each worker's own
    folder = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder
