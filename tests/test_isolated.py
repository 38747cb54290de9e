"""flask_uow.testing.isolated(): a test's units run in one transaction that is undone at exit."""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Iterator
from secrets import token_hex
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Propagation, ReadOnlyViolation, UnitOfWorkError
from flask_uow.testing import isolated, scratch_database

if TYPE_CHECKING:
    from flask import Flask


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "isolated_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(100), unique=True)


def stored_texts(url: str) -> list[str]:
    """What a separate connection sees committed in the notes table."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(Note.text).order_by(Note.text))
            return list(rows.scalars())
    finally:
        engine.dispose()


def visible_texts(db: Database) -> list[str]:
    """What a new unit of work sees in the notes table."""
    with db.unit_of_work(read_only=True):
        return list(db.session.scalars(sa.select(Note.text).order_by(Note.text)))


def add_note(db: Database, text: str, **options: object) -> None:
    """Commit one note in a unit of work with ``options``."""
    with db.unit_of_work(**options):  # type: ignore[arg-type]
        db.session.add(Note(text=text))


@pytest.fixture
def db(backend_url: str) -> Iterator[Database]:
    database = Database(backend_url, metadata=Base.metadata)
    database.create_all()
    with database.unit_of_work():
        database.session.add(Note(text="before"))
    yield database
    database.drop_all()
    database.dispose()


# -- committing and rolling back ----------------------------------------------------------------


def test_commit_inside_isolated_is_visible_to_later_units_and_undone_at_exit(
    db: Database, backend_url: str
) -> None:
    with isolated(db):
        add_note(db, "committed")
        assert visible_texts(db) == ["before", "committed"]
    assert stored_texts(backend_url) == ["before"]


def test_committed_work_is_invisible_to_other_connections_while_isolated(
    db: Database, backend_url: str
) -> None:
    with isolated(db):
        add_note(db, "committed")
        assert stored_texts(backend_url) == ["before"]


def test_rollback_of_a_unit_undoes_only_that_units_work(db: Database, backend_url: str) -> None:
    with isolated(db):
        add_note(db, "kept")
        with pytest.raises(ValueError), db.unit_of_work():
            db.session.add(Note(text="undone"))
            db.session.flush()
            raise ValueError("service failed")
        assert visible_texts(db) == ["before", "kept"]
    assert stored_texts(backend_url) == ["before"]


def test_set_rollback_undoes_the_unit_quietly(db: Database) -> None:
    with isolated(db):
        with db.unit_of_work() as unit:
            db.session.add(Note(text="undone"))
            unit.set_rollback()
        assert visible_texts(db) == ["before"]


def test_failed_flush_undoes_only_its_unit_and_later_units_still_run(
    db: Database, backend_url: str
) -> None:
    with isolated(db):
        add_note(db, "kept")
        with pytest.raises(sa.exc.IntegrityError):
            add_note(db, "before")
        add_note(db, "after the failure")
        assert visible_texts(db) == ["after the failure", "before", "kept"]
    assert stored_texts(backend_url) == ["before"]


def test_nested_unit_failure_undoes_only_its_savepoint(db: Database) -> None:
    with isolated(db):
        with db.unit_of_work():
            db.session.add(Note(text="outer"))
            with pytest.raises(sa.exc.IntegrityError):
                add_note(db, "before", propagation=Propagation.NESTED)
            add_note(db, "nested", propagation=Propagation.NESTED)
        assert visible_texts(db) == ["before", "nested", "outer"]


def test_requires_new_commits_in_a_savepoint_that_the_outer_unit_can_see(
    db: Database, backend_url: str
) -> None:
    with isolated(db):
        with db.unit_of_work():
            add_note(db, "independent", propagation=Propagation.REQUIRES_NEW)
            seen = db.session.scalars(sa.select(Note.text).order_by(Note.text)).all()
        assert seen == ["before", "independent"]
        assert visible_texts(db) == ["before", "independent"]
    assert stored_texts(backend_url) == ["before"]


def test_requires_new_failure_leaves_the_outer_unit_working(db: Database) -> None:
    with isolated(db):
        with db.unit_of_work():
            db.session.add(Note(text="outer"))
            with pytest.raises(sa.exc.IntegrityError):
                add_note(db, "before", propagation=Propagation.REQUIRES_NEW)
        assert visible_texts(db) == ["before", "outer"]


def test_requires_new_work_is_undone_when_the_enclosing_unit_rolls_back_after_running_sql(
    db: Database,
) -> None:
    """The documented difference from production, where REQUIRES_NEW work would stay."""
    with isolated(db):
        with pytest.raises(ValueError), db.unit_of_work():
            db.session.add(Note(text="outer"))
            db.session.flush()
            add_note(db, "independent", propagation=Propagation.REQUIRES_NEW)
            raise ValueError("outer failed")
        assert visible_texts(db) == ["before"]


def test_read_only_unit_inside_isolated_still_refuses_writes(db: Database) -> None:
    with isolated(db):
        with pytest.raises(ReadOnlyViolation), db.unit_of_work(read_only=True):
            db.session.add(Note(text="refused"))
            db.session.flush()
        assert visible_texts(db) == ["before"]


def test_isolation_level_of_a_unit_is_ignored_inside_isolated(db: Database) -> None:
    with isolated(db):
        add_note(db, "serializable", isolation_level="SERIALIZABLE")
        assert visible_texts(db) == ["before", "serializable"]


def test_a_unit_inside_isolated_runs_on_the_engine_of_the_held_connection(db: Database) -> None:
    with isolated(db) as connection:
        with db.unit_of_work() as outer:
            with db.unit_of_work() as joined:
                assert outer.engine is connection.engine is db.engine
                assert joined.engine is None  # a joined unit runs on its outer unit's engine


def test_yielded_connection_sees_what_units_committed(db: Database) -> None:
    with isolated(db) as connection:
        add_note(db, "committed")
        texts = connection.execute(sa.select(Note.text).order_by(Note.text)).scalars().all()
    assert texts == ["before", "committed"]


def test_database_is_unchanged_when_the_isolated_block_raises(
    db: Database, backend_url: str
) -> None:
    with pytest.raises(AssertionError), isolated(db):
        add_note(db, "committed")
        raise AssertionError("the test failed")
    assert stored_texts(backend_url) == ["before"]


def test_isolated_can_be_entered_again_after_it_ends(db: Database, backend_url: str) -> None:
    for text in ("first", "second"):
        with isolated(db):
            add_note(db, text)
            assert visible_texts(db) == ["before", text]
    assert stored_texts(backend_url) == ["before"]


# -- hooks --------------------------------------------------------------------------------------


def test_on_commit_hooks_run_when_the_unit_commits_inside_isolated(db: Database) -> None:
    events: list[str] = []
    with isolated(db):
        with db.unit_of_work() as unit:
            db.session.add(Note(text="committed"))
            unit.on_commit(lambda: events.append("committed"))
            unit.on_rollback(lambda: events.append("rolled back"))
            assert events == []
        assert events == ["committed"]
    assert events == ["committed"]


def test_on_rollback_hooks_run_when_the_unit_fails_inside_isolated(db: Database) -> None:
    events: list[str] = []
    with isolated(db):
        with pytest.raises(ValueError), db.unit_of_work() as unit:
            unit.on_commit(lambda: events.append("committed"))
            unit.on_rollback(lambda: events.append("rolled back"))
            raise ValueError("service failed")
        assert events == ["rolled back"]


def test_on_commit_hook_of_a_nested_unit_runs_when_the_outermost_unit_commits(
    db: Database,
) -> None:
    events: list[str] = []
    with isolated(db):
        with db.unit_of_work():
            with db.unit_of_work(propagation=Propagation.NESTED) as nested:
                nested.on_commit(lambda: events.append("nested committed"))
            assert events == []
        assert events == ["nested committed"]


# -- misuse -------------------------------------------------------------------------------------


def test_entering_isolated_inside_a_unit_raises(db: Database) -> None:
    with db.unit_of_work(), pytest.raises(UnitOfWorkError, match="outside any unit"):
        with isolated(db):
            pass


def test_entering_isolated_twice_at_once_raises(db: Database) -> None:
    with isolated(db), pytest.raises(UnitOfWorkError, match="already active"):
        with isolated(db):
            pass


def test_unit_in_another_thread_raises_while_isolated(db: Database, backend_url: str) -> None:
    errors: list[BaseException] = []

    def write_in_thread() -> None:
        try:
            add_note(db, "from a thread")
        except BaseException as error:
            errors.append(error)

    with isolated(db):
        thread = threading.Thread(target=write_in_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], UnitOfWorkError)
    assert "other threads" in str(errors[0])
    assert stored_texts(backend_url) == ["before"]


def test_unit_in_another_thread_with_a_copied_context_raises_while_isolated(
    db: Database,
) -> None:
    errors: list[BaseException] = []

    def write_in_thread() -> None:
        try:
            add_note(db, "from a thread")
        except BaseException as error:
            errors.append(error)

    with isolated(db):
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(write_in_thread,))
        thread.start()
        thread.join()
    assert [type(error) for error in errors] == [UnitOfWorkError]


def test_units_in_other_threads_work_normally_after_isolated_ends(
    db: Database, backend_url: str
) -> None:
    with isolated(db):
        pass
    thread = threading.Thread(target=add_note, args=(db, "from a thread"))
    thread.start()
    thread.join()
    assert stored_texts(backend_url) == ["before", "from a thread"]


def test_unit_left_open_is_rolled_back_and_reported_at_exit(
    db: Database, backend_url: str
) -> None:
    with pytest.raises(UnitOfWorkError, match="still active when isolated"), isolated(db):
        unit = db.unit_of_work()
        unit.__enter__()
        db.session.add(Note(text="leaked"))
        db.session.flush()
    assert db.current is None
    assert stored_texts(backend_url) == ["before"]
    with isolated(db):
        assert visible_texts(db) == ["before"]


# -- Flask --------------------------------------------------------------------------------------


def make_app(url: str, *, per_request: bool) -> tuple[Flask, Database]:
    """An app whose POST /notes adds a note (400 and no note for 'bad'), GET lists them."""
    from flask import Flask, request  # the rest of this file runs without Flask installed

    db = Database(metadata=Base.metadata)
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=url, UOW_PER_REQUEST=per_request)
    db.init_app(app)

    @db.transactional
    def add(text: str) -> None:
        db.session.add(Note(text=text))
        if text == "bad":
            db.current.set_rollback()  # type: ignore[union-attr]

    @app.post("/notes")
    def post_note() -> tuple[str, int]:
        text = request.form["text"]
        add(text)
        if text == "boom":
            raise RuntimeError("view failed after writing")
        return ("rejected", 400) if text == "bad" else ("created", 201)

    @app.get("/notes")
    def list_notes() -> list[str]:
        with db.unit_of_work(read_only=True):
            return list(db.session.scalars(sa.select(Note.text).order_by(Note.text)))

    return app, db


@pytest.mark.flask
@pytest.mark.parametrize("per_request", [True, False], ids=["per-request", "service-units"])
def test_flask_test_client_requests_are_isolated(
    backend_url: str, per_request: bool, db: Database
) -> None:
    app, app_db = make_app(backend_url, per_request=per_request)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    with app.app_context(), isolated(app_db):
        assert client.post("/notes", data={"text": "created"}).status_code == 201
        assert client.post("/notes", data={"text": "bad"}).status_code == 400
        assert client.get("/notes").json == ["before", "created"]
        with app_db.unit_of_work(read_only=True):
            assert app_db.session.scalar(sa.select(sa.func.count()).select_from(Note)) == 2
    assert stored_texts(backend_url) == ["before"]
    app_db.dispose()


@pytest.mark.flask
def test_flask_view_that_raises_rolls_back_its_request_unit(
    backend_url: str, db: Database
) -> None:
    app, app_db = make_app(backend_url, per_request=True)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    with app.app_context(), isolated(app_db):
        assert client.post("/notes", data={"text": "boom"}).status_code == 500
        assert client.get("/notes").json == ["before"]
    app_db.dispose()


@pytest.mark.flask
def test_isolated_uses_the_current_apps_engine(backend_url: str, db: Database) -> None:
    app, app_db = make_app(backend_url, per_request=False)
    with app.app_context(), isolated(app_db) as connection:
        assert connection.engine is app_db.engine
        assert app_db.url is None
    app_db.dispose()


# -- deferred constraints (PostgreSQL) ----------------------------------------------------------

deferred_metadata = sa.MetaData()
parents = sa.Table(
    "isolated_parents", deferred_metadata, sa.Column("id", sa.Integer, primary_key=True)
)
children = sa.Table(
    "isolated_children",
    deferred_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "parent_id",
        sa.Integer,
        sa.ForeignKey("isolated_parents.id", deferrable=True, initially="DEFERRED"),
    ),
)


@pytest.fixture
def deferred_db(backend_url: str, backend_name: str) -> Iterator[Database]:
    if backend_name != "postgresql":
        pytest.skip("deferred constraints are checked at COMMIT only on PostgreSQL")
    database = Database(backend_url, metadata=deferred_metadata)
    database.create_all()
    yield database
    database.drop_all()
    database.dispose()


def add_child(db: Database, child: int, parent: int | None = None) -> None:
    db.session.execute(children.insert().values(id=child, parent_id=parent or child))
    if parent is not None:
        db.session.execute(parents.insert().values(id=parent))


def count_children(db: Database) -> int:
    with db.unit_of_work(read_only=True):
        return db.session.scalar(sa.select(sa.func.count()).select_from(children)) or 0


def test_deferred_constraint_violation_fails_the_units_commit(deferred_db: Database) -> None:
    events: list[str] = []
    with isolated(deferred_db):
        with pytest.raises(sa.exc.IntegrityError), deferred_db.unit_of_work() as unit:
            unit.on_rollback(lambda: events.append("rolled back"))
            add_child(deferred_db, 1)
        assert events == ["rolled back"]
        assert count_children(deferred_db) == 0
        with deferred_db.unit_of_work():
            add_child(deferred_db, 2, parent=2)
        assert count_children(deferred_db) == 1


def test_deferred_constraints_stay_deferred_inside_later_units(deferred_db: Database) -> None:
    with isolated(deferred_db):
        for child in (1, 2):
            with deferred_db.unit_of_work():
                deferred_db.session.execute(children.insert().values(id=child, parent_id=child))
                deferred_db.session.flush()
                deferred_db.session.execute(parents.insert().values(id=child))
        assert count_children(deferred_db) == 2


def test_requires_new_does_not_check_the_enclosing_units_pending_violation(
    deferred_db: Database,
) -> None:
    with isolated(deferred_db):
        with deferred_db.unit_of_work():
            deferred_db.session.execute(children.insert().values(id=1, parent_id=1))
            with deferred_db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                add_child(deferred_db, 2, parent=2)
            deferred_db.session.execute(parents.insert().values(id=1))
        assert count_children(deferred_db) == 2


def test_requires_new_violation_fails_when_the_enclosing_unit_commits(
    deferred_db: Database,
) -> None:
    with isolated(deferred_db):
        with pytest.raises(sa.exc.IntegrityError), deferred_db.unit_of_work():
            with deferred_db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                add_child(deferred_db, 1)
        assert count_children(deferred_db) == 0


# -- scratch_database ---------------------------------------------------------------------------


def test_scratch_database_is_empty_usable_and_gone_afterwards(backend_url: str) -> None:
    with scratch_database(backend_url, f"flask_uow_scratch_{token_hex(4)}") as url:
        db = Database(url, metadata=Base.metadata)
        assert sa.inspect(db.engine).get_table_names() == []
        db.create_all()
        add_note(db, "in scratch")
        assert visible_texts(db) == ["in scratch"]
        db.dispose()
    assert url.database is not None
    if url.get_backend_name() == "sqlite":
        assert not os.path.exists(url.database)
    else:
        # Asked of the server's catalog from the database the scratch one was made beside:
        # behind PgBouncer a connection to a dropped database waits for its query_wait_timeout
        # (120 s) before failing.
        catalog = (
            "SELECT count(*) FROM pg_database WHERE datname = :name"
            if url.get_backend_name() == "postgresql"
            else "SELECT count(*) FROM information_schema.schemata WHERE schema_name = :name"
        )
        engine = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            assert connection.scalar(sa.text(catalog), {"name": url.database}) == 0
        engine.dispose()


def test_scratch_database_replaces_a_leftover_of_the_same_name(backend_url: str) -> None:
    name = f"flask_uow_scratch_{token_hex(4)}"
    with scratch_database(backend_url, name) as first:
        db = Database(first, metadata=Base.metadata)
        db.create_all()
        db.dispose()
        with scratch_database(backend_url, name) as second:
            engine = sa.create_engine(second, poolclass=sa.pool.NullPool)
            assert sa.inspect(engine).get_table_names() == []
            engine.dispose()


def test_scratch_database_refuses_names_that_need_quoting(backend_url: str) -> None:
    with pytest.raises(ValueError, match="letters, digits and _"):
        with scratch_database(backend_url, 'x"; DROP DATABASE test; --'):
            pass
