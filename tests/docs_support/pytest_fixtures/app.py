"""conftest.py of doc examples marked ``pytest fixtures=app``: myapp on a SQLite file."""

import os

import pytest
from flask import Flask
from myapp import create_app  # type: ignore[import-not-found]  # copied in at run time


@pytest.fixture
def uow_app() -> Flask:
    app: Flask = create_app({"UOW_DATABASE_URL": os.environ["TEST_DATABASE_URL"]})
    return app
