"""Flask-Migrate and Flask-Alembic generate and apply migrations from a flask-uow Database."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import flask_migrate  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_alembic import Alembic
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Model
from flask_uow.testing import scratch_database


class Base(Model, DeclarativeBase):
    pass


class MigratedNote(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))


@pytest.fixture
def scratch_url(backend_url: str) -> Iterator[str]:
    """An empty database of its own on the backend: migrations commit DDL for real."""
    with scratch_database(backend_url, f"migrate_{secrets.token_hex(4)}") as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo the logging set-up of the migration tools (Alembic's fileConfig disables loggers)."""
    loggers = [logging.root] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = {id(lg): (lg.disabled, lg.level, list(lg.handlers), lg.propagate) for lg in loggers}
    yield
    for logger in [logging.root, *logging.root.manager.loggerDict.values()]:
        if not isinstance(logger, logging.Logger):
            continue
        disabled, level, handlers, propagate = saved.get(id(logger), (False, 0, [], True))
        logger.disabled, logger.propagate = disabled, propagate
        logger.setLevel(level)
        logger.handlers[:] = handlers


def make_app(url: str) -> tuple[Flask, Database]:
    app = Flask(__name__)
    app.config["UOW_DATABASE_URL"] = url
    db = Database(metadata=Base.metadata)
    db.init_app(app)
    return app, db


OUTBOX_TABLES = {"flask_uow_outbox", "flask_uow_outbox_keys", "flask_uow_inbox"}
"""The Database adds them to its metadata: migrations create them with the app's tables."""


def tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def notes_after_a_unit(db: Database) -> list[str]:
    with db.unit_of_work():
        db.session.add(MigratedNote(text="migrated"))
    with db.unit_of_work(read_only=True):
        return list(db.session.scalars(sa.select(MigratedNote.text)))


def test_flask_migrate_init_migrate_upgrade_and_downgrade(scratch_url: str, tmp_path: Path) -> None:
    app, db = make_app(scratch_url)
    directory = str(tmp_path / "migrations")
    flask_migrate.Migrate(app, db, directory=directory)
    with app.app_context():
        flask_migrate.init(directory)
        flask_migrate.migrate(directory, message="notes")
        (script,) = (tmp_path / "migrations" / "versions").glob("*_notes.py")
        assert "create_table('migrated_note'" in script.read_text()
        assert "create_table('flask_uow_outbox'" in script.read_text()
        flask_migrate.upgrade(directory)
        assert tables(db) == {"alembic_version", "migrated_note", *OUTBOX_TABLES}
        assert notes_after_a_unit(db) == ["migrated"]
        flask_migrate.downgrade(directory, revision="base")
        assert tables(db) == {"alembic_version"}
        db.dispose()


def test_flask_migrate_generates_nothing_once_the_schema_is_current(
    scratch_url: str, tmp_path: Path
) -> None:
    app, db = make_app(scratch_url)
    directory = str(tmp_path / "migrations")
    flask_migrate.Migrate(app, db, directory=directory)
    with app.app_context():
        flask_migrate.init(directory)
        flask_migrate.migrate(directory, message="notes")
        flask_migrate.upgrade(directory)
        flask_migrate.migrate(directory, message="nothing")  # "No changes in schema detected."
        assert list((tmp_path / "migrations" / "versions").glob("*_nothing.py")) == []
        db.dispose()


def test_flask_alembic_revision_upgrade_and_downgrade(scratch_url: str, tmp_path: Path) -> None:
    app, db = make_app(scratch_url)
    app.config["ALEMBIC"] = {"script_location": str(tmp_path / "migrations")}
    with app.app_context():
        alembic = Alembic(metadatas=db.metadata, engines=db.engine)
    alembic.init_app(app)
    # Flask-Alembic keeps its connection until the app context ends (as a CLI command does):
    # on SQLite a unit that writes must wait for that, so each step has its own context.
    with app.app_context():
        alembic.mkdir()
        alembic.revision("notes")
        assert alembic.needs_upgrade()
        alembic.upgrade()
    with app.app_context():
        assert tables(db) == {"alembic_version", "migrated_note", *OUTBOX_TABLES}
        assert not alembic.needs_revision()
    with app.app_context():
        assert notes_after_a_unit(db) == ["migrated"]
    with app.app_context():
        alembic.downgrade("base")
    with app.app_context():
        assert tables(db) == {"alembic_version"}
        db.dispose()
