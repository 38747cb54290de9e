"""The outbox tables are in a Database's metadata from the start: ``create_all()`` creates
them and Alembic (so Flask-Migrate's autogenerate) proposes them, with no outbox call first."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from flask_uow import Database

from .outbox_support import Collector

OUTBOX_TABLES = {"flask_uow_outbox", "flask_uow_outbox_keys", "flask_uow_inbox"}


def fresh_database(url: str, table: str) -> Database:
    """A Database over a new MetaData with one table of its own, none of whose tables exist."""
    metadata = sa.MetaData()
    sa.Table(table, metadata, sa.Column("id", sa.Integer, primary_key=True))
    db = Database(url, metadata=metadata)
    with db.engine.connect() as connection:
        for name in (*OUTBOX_TABLES, table):
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        connection.commit()
    return db


def test_autogenerate_proposes_the_outbox_tables_of_a_database_whose_outbox_was_never_used(
    backend_url: str,
) -> None:
    db = fresh_database(backend_url, "orders")
    with db.engine.connect() as connection:
        assert db.metadata is not None
        diffs = compare_metadata(MigrationContext.configure(connection), db.metadata)
    added = {diff[1].name for diff in diffs if diff[0] == "add_table"}
    assert added == {"orders", *OUTBOX_TABLES}
    assert "_outbox" not in db.__dict__  # nothing touched the outbox
    db.dispose()
    assert "_outbox" not in db.__dict__  # nor did dispose(), which stops an outbox in use


def test_create_all_of_a_fresh_database_creates_the_outbox_and_inbox_tables_and_enqueue_works(
    backend_url: str,
) -> None:
    db = fresh_database(backend_url, "fresh_orders")
    db.create_all()
    assert OUTBOX_TABLES | {"fresh_orders"} <= set(sa.inspect(db.engine).get_table_names())
    sent = Collector()
    db.outbox.publish_with(sent)
    with db.unit_of_work():
        db.session.execute(sa.text("INSERT INTO fresh_orders (id) VALUES (1)"))
        message_id = db.enqueue("shop.receipt", 1)
    assert [(message.id, message.args) for message in sent.messages] == [(message_id, [1])]
    assert db.outbox.pending() == 0
    db.drop_all()
    assert not OUTBOX_TABLES & set(sa.inspect(db.engine).get_table_names())
    db.dispose()


def test_a_database_adds_the_outbox_tables_without_loading_the_outbox() -> None:
    code = (
        "import sys, sqlalchemy as sa; from flask_uow import Database; "
        "db = Database('sqlite://', metadata=sa.MetaData()); "
        "print(sorted(db.metadata.tables), 'flask_uow.outbox._outbox' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split("]")[-1].strip() == "False", result.stderr
    assert "'flask_uow_inbox', 'flask_uow_outbox', 'flask_uow_outbox_keys'" in result.stdout
