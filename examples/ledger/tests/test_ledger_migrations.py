"""``flask ledger migrate`` builds the schema the models describe."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask

from flask_uow.testing import scratch_database
from ledger.app import create_app
from ledger.database import db
from ledger.models import Base


def _columns(inspector: sa.Inspector, table: str) -> dict[str, tuple[bool, type[Any]]]:
    return {
        column["name"]: (column["nullable"], column["type"]._type_affinity)  # type: ignore[misc]
        for column in inspector.get_columns(table)
    }


STORED_AS: dict[str, dict[type[Any], type[Any]]] = {
    "mysql": {sa.JSON: sa.String, sa.Boolean: sa.Integer}
}
"""Types a backend has no column type of its own for: MariaDB keeps JSON in LONGTEXT and
booleans in TINYINT, and reflects them so."""


def _model_columns(table: str, dialect: str) -> dict[str, tuple[bool, type[Any]]]:
    stored = STORED_AS.get(dialect, {})
    columns: dict[str, tuple[bool, type[Any]]] = {}
    for column in Base.metadata.tables[table].columns:
        affinity: type[Any] = column.type._type_affinity  # type: ignore[assignment]
        columns[column.name] = (bool(column.nullable), stored.get(affinity, affinity))
    return columns


def _migrate(app: Flask, *args: str) -> None:
    result = app.test_cli_runner().invoke(args=["ledger", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)


def _assert_schema_matches_models(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as connection:
        inspector = sa.inspect(connection)
        tables = set(inspector.get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
        for table in Base.metadata.tables:
            dialect = connection.dialect.name
            assert _columns(inspector, table) == _model_columns(table, dialect), table
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []


def test_migrating_a_fresh_sqlite_file_creates_the_tables_of_the_models(tmp_path: Path) -> None:
    app = create_app({"UOW_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"})
    try:
        _migrate(app, "migrate")

        _assert_schema_matches_models(app)
    finally:
        with app.app_context():
            db.dispose()


def test_migrations_upgrade_and_downgrade_cleanly_on_every_backend(backend_url: str) -> None:
    # A database of its own: the migrations' DDL must not touch the tables that the other
    # tests share (and on MariaDB, DDL would commit their isolated transactions).
    with scratch_database(backend_url, f"ledger_migrations_{secrets.token_hex(4)}") as url:
        app = create_app({"UOW_DATABASE_URL": url.render_as_string(hide_password=False)})
        try:
            _migrate(app, "migrate")
            _assert_schema_matches_models(app)

            _migrate(app, "downgrade", "base")

            with app.app_context(), db.engine.connect() as connection:
                assert sa.inspect(connection).get_table_names() == ["alembic_version"]
        finally:
            with app.app_context():
                db.dispose()


def test_a_migrated_database_serves_the_api(tmp_path: Path) -> None:
    app = create_app({"UOW_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"})
    try:
        _migrate(app, "migrate")
        client = app.test_client()

        created = client.post("/customers", json={"name": "Ada", "email": "ada@example.com"})
        report = app.test_cli_runner().invoke(args=["ledger", "report"])

        assert created.status_code == 201
        assert report.output.strip() == "customers=1 accounts=1 transfers=0 total_balance=0"
    finally:
        with app.app_context():
            db.dispose()
