"""``flask uow check`` names what is wrong when the database cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from flask_uow import Database

from .models import Base

pytestmark = pytest.mark.flask


def test_check_reports_an_unreachable_database_without_a_password(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-folder' / 'app.db'}"
    db = Database(metadata=Base.metadata)
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=url, TESTING=True)
    db.init_app(app)

    result = app.test_cli_runner().invoke(args=["uow", "check"])

    assert result.exit_code == 1
    assert f"database: {url}" in result.output
    assert "unreachable: unable to open database file" in result.output
    db.dispose()
