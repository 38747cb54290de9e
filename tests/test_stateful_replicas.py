"""Replica routing after every outcome, against a model (``scripts/replica.sh start``).

Random steps commit a write, roll one back, end one with an unknown outcome (a real SIGINT
once COMMIT has landed, or before it goes out), pause or resume WAL replay on the replica,
read in a read-only unit of this thread's causal scope, or read in another thread with the
scope's ``db.causal_token()``. The model knows which rows are committed and whether the
scope's position is unknown; every read must see exactly the committed rows (read-your-
writes), and after an unknown outcome the scope's reads run on the primary until a commit or
a token gives it a known position again (docs/replicas.md). Serial: it pauses replay on the
one shared replica.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import event

from flask_uow import Database, Outcome
from flask_uow._replicas import Replicas

from .conftest import checked_out, committed_names
from .models import Base, Item
from .reliability._scale import scaled
from .stateful_runners import Boom, machine_factory
from .test_stateful_faults import interrupt_here

pytestmark = pytest.mark.serial  # pauses replay on the one shared replica

REPLICA_PORT = 5433


class ReplicaRouting(RuleBasedStateMachine):
    db: Database
    observer: sa.Engine
    replica_admin: sa.Engine
    where: Counter[str]

    def __init__(self) -> None:
        super().__init__()
        with self.db.unit_of_work():
            self.db.session.execute(sa.delete(Item))
        self.committed = set(committed_names(self.observer))
        assert not self.committed
        self.position_unknown = False
        self.paused = False
        self.counter = 0

    def _name(self) -> str:
        self.counter += 1
        return f"replicated-{id(self)}-{self.counter}"

    def _hooks(self, unit: Any) -> list[str]:
        ran: list[str] = []
        unit.on_commit(lambda: ran.append("commit"))
        unit.on_rollback(lambda: ran.append("rollback"))
        unit.on_outcome_unknown(lambda: ran.append("unknown"))
        return ran

    # -- outcomes ----------------------------------------------------------------------------

    @rule()
    def commit_a_write(self) -> None:
        name = self._name()
        with self.db.unit_of_work() as unit:
            ran = self._hooks(unit)
            self.db.session.add(Item(name=name))
        assert (unit.outcome, ran) == (Outcome.COMMITTED, ["commit"])
        self.committed.add(name)
        self.position_unknown = False  # a known position replaces an unknown one

    @rule()
    def roll_back_a_write(self) -> None:
        with pytest.raises(Boom), self.db.unit_of_work() as unit:
            ran = self._hooks(unit)
            self.db.session.add(Item(name=self._name()))
            self.db.session.flush()
            raise Boom
        assert (unit.outcome, ran) == (Outcome.ROLLED_BACK, ["rollback"])

    @rule(landed=st.booleans())
    def end_with_an_unknown_outcome(self, landed: bool) -> None:
        """A SIGINT once COMMIT landed (or just before it goes out): nobody knows whether it
        committed; the database is asked, as a caller resolving it would."""
        name = self._name()

        def interrupt(connection: sa.Connection) -> None:
            if landed:
                connection.connection.dbapi_connection.commit()  # type: ignore[union-attr]
            interrupt_here()

        event.listen(self.db.engine, "commit", interrupt)
        try:
            with pytest.raises(KeyboardInterrupt), self.db.unit_of_work() as unit:
                ran = self._hooks(unit)
                self.db.session.add(Item(name=name))
        finally:
            event.remove(self.db.engine, "commit", interrupt)
        assert (unit.outcome, ran) == (Outcome.OUTCOME_UNKNOWN, ["unknown"])
        stored = name in committed_names(self.observer)
        assert stored is landed
        if stored:
            self.committed.add(name)
        self.position_unknown = True

    # -- the replica -------------------------------------------------------------------------

    @rule()
    def pause_or_resume_replay(self) -> None:
        self.paused = not self.paused
        with self.replica_admin.connect() as connection:
            call = "pg_wal_replay_pause" if self.paused else "pg_wal_replay_resume"
            connection.execute(sa.text(f"SELECT {call}()"))

    # -- reads -------------------------------------------------------------------------------

    @rule()
    def read_in_this_scope(self) -> None:
        port, names = self._read()
        assert names == sorted(self.committed), "a read of this scope missed its writes"
        if self.position_unknown:
            assert port != REPLICA_PORT, "after an unknown outcome, reads must use the primary"
        self.where["replica" if port == REPLICA_PORT else "primary"] += 1

    @rule()
    def read_with_a_token_in_another_thread(self) -> None:
        token = self.db.causal_token()  # reads the primary's position if this scope's is unknown
        self.position_unknown = False
        seen: list[tuple[int, list[str]]] = []
        thread = threading.Thread(target=lambda: seen.append(self._read(after=token)))
        thread.start()
        thread.join(60)
        assert len(seen) == 1
        port, names = seen[0]
        assert names == sorted(self.committed), "a read with the token missed its writes"
        self.where["replica, token" if port == REPLICA_PORT else "primary, token"] += 1

    def _read(self, after: str | None = None) -> tuple[int, list[str]]:
        with self.db.unit_of_work(read_only=True, after=after) as unit:
            ran = self._hooks(unit)
            port = self.db.session.scalar(sa.text("SELECT inet_server_port()"))
            names = list(self.db.session.scalars(sa.select(Item.name).order_by(Item.name)))
        assert (unit.outcome, ran) == (Outcome.READ_ONLY, ["commit"])
        assert port is not None
        return int(port), names

    # -- after every step --------------------------------------------------------------------

    @invariant()
    def no_unit_is_left_active_and_no_connection_checked_out(self) -> None:
        assert self.db.current is None
        assert self.db.stats.active == 0
        assert checked_out(self.db) == 0

    def teardown(self) -> None:
        if self.paused:
            self.pause_or_resume_replay()


@pytest.fixture
def routed(primary_url: str, replica_url: str) -> Iterator[tuple[Database, sa.Engine, sa.Engine]]:
    """A Database on the primary with the replica (quick to wait and probe), an observer of
    the primary and an autocommit engine on the replica; the table replayed there."""
    replicas = Replicas([replica_url], max_wait=0.05, probe_interval=0.05, backoff=0.2)
    db = Database(primary_url, metadata=Base.metadata, replicas=replicas)
    db.drop_all()
    db.create_all()
    observer = sa.create_engine(primary_url, poolclass=sa.pool.NullPool)
    admin = sa.create_engine(replica_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + 30
    with admin.connect() as connection:
        while not connection.scalar(sa.text("SELECT to_regclass('uow_item') IS NOT NULL")):
            assert time.monotonic() < deadline, "the table never reached the replica"
            time.sleep(0.01)
    try:
        yield db, observer, admin
    finally:
        with admin.connect() as connection:  # never leave the shared replica paused
            connection.execute(sa.text("SELECT pg_wal_replay_resume()"))
        admin.dispose()
        observer.dispose()
        db.drop_all()
        db.dispose()


def test_reads_after_every_outcome_route_as_the_model_says(
    routed: tuple[Database, sa.Engine, sa.Engine],
) -> None:
    db, observer, admin = routed
    where: Counter[str] = Counter()
    machine: Any = type(
        "ReplicaRoutingOnPostgresql",
        (ReplicaRouting,),
        {"db": db, "observer": observer, "replica_admin": admin, "where": where},
    )
    run_state_machine_as_test(
        machine_factory(machine),
        settings=settings(
            max_examples=scaled(25, 400),
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
    # Both ways were taken: the model checked reads on the replica and on the primary.
    assert where["replica"] and where["primary"], where
