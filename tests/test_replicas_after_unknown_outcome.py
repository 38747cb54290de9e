"""After ``CommitOutcomeUnknown`` the scope reads the primary: the work may be there, and a
stale replica would say it is not (``scripts/replica.sh start``; serial, it pauses replay)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from flask_uow import CommitOutcomeUnknown, Database
from flask_uow._replicas import Replicas

from ._interrupt import HOLD_SECONDS, CommitAnswerHoldingProxy, holding_proxy
from .models import Base, Item

pytestmark = pytest.mark.serial  # pauses replay on the one shared replica


@contextmanager
def paused_replay(replica_url: str) -> Iterator[None]:
    """The replica receives WAL and replays none of it inside the block."""
    admin = sa.create_engine(replica_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT pg_wal_replay_pause()"))
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT pg_wal_replay_resume()"))
        admin.dispose()


def cut_once_commit_is_sent(proxy: CommitAnswerHoldingProxy) -> None:
    """In a thread: drop the connections once COMMIT reached the server (its answer is lost)."""

    def cut() -> None:
        if proxy.commit_sent.wait(HOLD_SECONDS):
            proxy.cut()

    threading.Thread(target=cut, daemon=True).start()


@pytest.fixture
def tables(primary_url: str, replica_url: str) -> Iterator[None]:
    setup = Database(primary_url, metadata=Base.metadata)
    setup.drop_all()
    setup.create_all()
    replica = sa.create_engine(replica_url, poolclass=sa.pool.NullPool)
    with replica.connect() as connection:
        for _ in range(200):
            if connection.scalar(sa.text("SELECT to_regclass('uow_item') IS NOT NULL")):
                break
            time.sleep(0.05)
    replica.dispose()
    yield
    setup.drop_all()
    setup.dispose()


def test_after_an_unknown_outcome_the_same_thread_reads_the_primary_and_finds_the_work(
    tables: None, primary_url: str, replica_url: str
) -> None:
    with holding_proxy(primary_url) as (url, proxy), paused_replay(replica_url):
        db = Database(url, replicas=Replicas([replica_url], max_wait=0.05))
        try:
            proxy.holding = True
            cut_once_commit_is_sent(proxy)
            with pytest.raises(CommitOutcomeUnknown):
                with db.unit_of_work():
                    db.session.add(Item(name="maybe"))
            proxy.release()
            for _ in range(100):  # the listener that cut() closed may take a moment to go
                try:
                    proxy.restore()
                    break
                except OSError:
                    time.sleep(0.05)
            with db.unit_of_work(read_only=True):
                port = db.session.scalar(sa.text("SELECT inet_server_port()"))
                names = list(db.session.scalars(sa.select(Item.name)))
            assert (port, names) == (5432, ["maybe"])
        finally:
            db.dispose()
