"""The idle-in-transaction warning names the unit and the line where its connection sat idle."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterator

import flask
import pytest
import sqlalchemy as sa

from flask_uow import Database, UnitOfWorkError

from .models import Base, Item


@pytest.fixture
def watched(backend_url: str) -> Iterator[Database]:
    database = Database(backend_url, metadata=Base.metadata, warn_idle_ms=100)
    database.drop_all()
    database.create_all()
    yield database
    database.drop_all()
    database.dispose()


def idle_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "flask_uow" and "idle in a transaction" in record.getMessage()
    ]


def here() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def test_a_sleep_between_two_statements_logs_one_warning_naming_both_places(
    watched: Database, caplog: pytest.LogCaptureFixture
) -> None:
    opened = here() + 1
    with watched.unit_of_work():
        watched.session.execute(sa.select(Item)).all()
        time.sleep(0.2)
        resumed = here() + 1
        watched.session.execute(sa.select(Item)).all()
        watched.session.execute(sa.select(Item)).all()
    [message] = idle_warnings(caplog)
    assert f"{__file__}:{opened} in " in message
    assert f"until {__file__}:{resumed} in " in message


def test_a_sleep_after_the_last_statement_is_found_at_the_end_of_the_unit(
    watched: Database, caplog: pytest.LogCaptureFixture
) -> None:
    @watched.transactional
    def slow_service() -> None:
        watched.session.add(Item(name="written"))
        watched.session.flush()
        time.sleep(0.2)

    called = here() + 1
    slow_service()
    [message] = idle_warnings(caplog)
    assert "in slow_service" in message  # where the unit was opened
    assert f"until {__file__}:{called} in " in message  # the unit ended in its caller


def slow_statement(backend_name: str, seconds: float) -> sa.TextClause:
    if backend_name == "postgresql":
        return sa.text(f"SELECT pg_sleep({seconds})")
    if backend_name == "mariadb":
        return sa.text(f"SELECT SLEEP({seconds})")
    return sa.text(f"SELECT test_sleep({seconds})")


def test_a_unit_doing_only_sql_stays_quiet_even_when_a_statement_is_slow(
    watched: Database, caplog: pytest.LogCaptureFixture, backend_name: str
) -> None:
    # The statement runs longer than the threshold; the threshold leaves a busy machine's
    # scheduling pauses between statements (300 ms seen under load) a wide margin.
    watched.warn_idle(1000)
    if backend_name == "sqlite":
        sa.event.listen(
            watched.engine,
            "connect",
            lambda connection, record: connection.create_function(
                "test_sleep", 1, time.sleep
            ),
        )
        watched.engine.dispose()  # new connections get the function
    with watched.unit_of_work():
        watched.session.execute(slow_statement(backend_name, 1.2))  # running, not idle
        for number in range(20):
            watched.session.add(Item(name=f"item-{number}"))
            watched.session.flush()
        watched.session.execute(sa.select(Item)).all()
    assert idle_warnings(caplog) == []


def test_time_before_the_first_statement_is_not_idle_in_a_transaction(
    watched: Database, caplog: pytest.LogCaptureFixture
) -> None:
    watched.warn_idle(1000)  # a wide margin for the gap between the statement and COMMIT
    with watched.unit_of_work():
        time.sleep(1.2)  # no connection held yet
        watched.session.execute(sa.select(Item)).all()
    assert idle_warnings(caplog) == []


def test_the_warning_installs_statement_listeners_only_when_enabled(backend_url: str) -> None:
    db = Database(backend_url)
    try:
        with db.unit_of_work():
            db.session.execute(sa.text("SELECT 1"))
        engine = db.engine
        assert not engine.dispatch.before_cursor_execute
        db.warn_idle(100)
        with db.unit_of_work():
            db.session.execute(sa.text("SELECT 1"))
        assert engine.dispatch.before_cursor_execute
        db.warn_idle(None)
        assert not engine.dispatch.before_cursor_execute
        assert db.runtime.observers == ()
    finally:
        db.dispose()


def test_a_flask_app_in_debug_mode_warns_by_default_and_in_production_does_not(
    backend_url: str,
) -> None:
    for debug, expected in ((True, 100.0), (False, None)):
        db = Database()
        app = flask.Flask(__name__)
        app.config["UOW_DATABASE_URL"] = backend_url
        app.debug = debug
        db.init_app(app)
        assert db.warn_idle_ms == expected
    configured = Database()
    app = flask.Flask(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_WARN_IDLE_MS=250)
    configured.init_app(app)
    assert configured.warn_idle_ms == 250


def test_the_warning_goes_to_the_flask_uow_logger_at_warning_level(
    watched: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_uow")
    with watched.unit_of_work():
        watched.session.execute(sa.select(Item)).all()
        time.sleep(0.15)
        watched.session.execute(sa.select(Item)).all()
        time.sleep(0.15)
        watched.session.execute(sa.select(Item)).all()
    [record] = [r for r in caplog.records if "idle in a transaction" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "and 1 more time" in record.getMessage()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(False, None), (0, None), (True, 100.0), (40, 40.0)],
    ids=["False", "0", "True", "ms"],
)
def test_uow_warn_idle_ms_turns_the_warning_off_on_or_to_a_threshold(
    value: object, expected: float | None
) -> None:
    db = Database()
    app = flask.Flask(__name__)
    app.config.update(UOW_DATABASE_URL="sqlite://", UOW_WARN_IDLE_MS=value)
    app.debug = True
    db.init_app(app)
    assert db.warn_idle_ms == expected


@pytest.mark.parametrize("value", ["100ms", -1, [50]], ids=["text", "negative", "list"])
def test_a_uow_warn_idle_ms_that_is_not_milliseconds_is_refused_naming_the_key(
    value: object,
) -> None:
    app = flask.Flask(__name__)
    app.config.update(UOW_DATABASE_URL="sqlite://", UOW_WARN_IDLE_MS=value)
    with pytest.raises(UnitOfWorkError, match="UOW_WARN_IDLE_MS takes milliseconds"):
        Database().init_app(app)


@pytest.mark.parametrize("threshold", [0, -5, float("nan")])
def test_warn_idle_refuses_a_threshold_that_is_not_a_positive_number(threshold: float) -> None:
    db = Database("sqlite://")
    with pytest.raises(ValueError, match="positive number of milliseconds"):
        db.warn_idle(threshold)
    assert db.warn_idle_ms is None
    assert db.runtime.observers == ()
