"""What the outbox costs the units that do not use it: nothing, once it is in use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from flask_uow import Database

from .counting import count_calls
from .outbox_support import drop_database, make_database, thing


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    with database.unit_of_work():
        database.session.execute(sa.insert(thing).values(id=1, name="seeded"))
    yield database
    drop_database(database)


def _costs(database: Database) -> tuple[int, int]:
    """Calls of an empty unit and of a primary-key read unit of ``database``."""

    def empty_unit() -> None:
        with database.unit_of_work():
            pass

    def primary_key_unit() -> None:
        with database.unit_of_work():
            database.session.execute(sa.select(thing.c.name).where(thing.c.id == 1)).one()

    return count_calls(empty_unit), count_calls(primary_key_unit)


def test_units_that_enqueue_nothing_make_as_many_calls_once_the_outbox_is_used(
    odb: Database, backend_url: str
) -> None:
    odb.outbox.publish_with(lambda messages: None)
    with odb.unit_of_work():  # the outbox is in use: one unit wrote a message
        odb.enqueue("used", 1)
    odb.outbox.flush()
    without_outbox = Database(backend_url, metadata=sa.MetaData())
    try:
        plain = _costs(without_outbox)
    finally:
        without_outbox.dispose()

    used = _costs(odb)

    assert used == plain, f"calls (empty unit, primary-key unit): {plain} without the outbox"
