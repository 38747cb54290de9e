"""Causal positions and tokens of ``Replicas``, without a server (nothing here connects)."""

from __future__ import annotations

import threading

import pytest

from flask_uow._replicas import (
    UNKNOWN_POSITION,
    Replicas,
    format_lsn,
    make_token,
    parse_lsn,
    parse_token,
)

NOWHERE = "postgresql+psycopg://app@127.0.0.1:1/app"


@pytest.fixture
def replicas() -> Replicas:
    return Replicas([NOWHERE])


def test_lsns_read_and_print_as_postgresql_spells_them() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("0/3000060") < parse_lsn("1/0")


def test_a_token_round_trips_its_position_and_an_empty_one_asks_for_nothing() -> None:
    assert parse_token(make_token(parse_lsn("A/10"))) == parse_lsn("A/10")
    assert parse_token(make_token(None)) is None
    assert parse_token("") is None


@pytest.mark.parametrize("bad", ["A/10", "lsn:", "lsn:xyz", "lsn:1/2/3"])
def test_a_string_that_is_not_a_token_is_refused_naming_causal_token(bad: str) -> None:
    with pytest.raises(ValueError, match=r"db\.causal_token\(\)"):
        parse_token(bad)


def test_the_causal_position_only_moves_forward(replicas: Replicas) -> None:
    replicas.note_position(parse_lsn("0/200"))
    replicas.note_position(parse_lsn("0/100"))
    assert replicas.current_position() == parse_lsn("0/200")
    assert replicas.token() == "lsn:0/200"


def test_an_unknown_position_gives_way_to_the_next_known_one(replicas: Replicas) -> None:
    replicas.note_position(parse_lsn("0/200"))
    replicas.note_position(UNKNOWN_POSITION)
    assert replicas.current_position() == UNKNOWN_POSITION
    # Nothing to ask (no primary watched yet): the token says "unknown", read the primary.
    assert parse_token(replicas.token()) == UNKNOWN_POSITION
    replicas.note_position(parse_lsn("0/300"))
    assert replicas.current_position() == parse_lsn("0/300")


def test_each_thread_has_its_own_causal_position(replicas: Replicas) -> None:
    replicas.note_position(parse_lsn("0/200"))
    seen: list[int | None] = []
    thread = threading.Thread(target=lambda: seen.append(replicas.current_position()))
    thread.start()
    thread.join()
    assert seen == [None]


def test_a_causal_scope_starts_at_its_position_and_restores_the_outer_one(
    replicas: Replicas,
) -> None:
    replicas.note_position(parse_lsn("0/200"))
    with replicas.causal_scope(None):
        assert replicas.current_position() is None
        replicas.note_position(parse_lsn("0/900"))
    assert replicas.current_position() == parse_lsn("0/200")


def test_replicas_must_be_postgresql_and_settings_not_negative() -> None:
    with pytest.raises(ValueError, match="PostgreSQL only"):
        Replicas(["mysql+pymysql://root@127.0.0.1/app"])
    with pytest.raises(ValueError, match="0 or more"):
        Replicas([NOWHERE], max_wait=-1)


def test_a_url_is_shown_with_its_password_masked() -> None:
    replicas = Replicas(["postgresql+psycopg://app:hunter2@127.0.0.1:1/app"])
    assert "hunter2" not in repr(replicas)
    assert "app:***@" in repr(replicas)


@pytest.mark.flask
def test_init_app_with_replica_urls_installs_one_replica_set_and_its_hooks_once() -> None:
    from flask import Flask

    from flask_uow import Database

    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL="sqlite://",
        UOW_REPLICA_URLS=NOWHERE,
    )
    db = Database()
    db.init_app(app)
    try:
        saves = [f for f in app.after_request_funcs[None] if f.__qualname__.endswith("save")]
        ends = [f for f in app.teardown_request_funcs[None] if f.__qualname__.endswith("end")]
        assert len(saves) == 1
        assert len(ends) == 1
    finally:
        db.dispose()


def test_noting_no_position_leaves_the_causal_position_as_it_was(replicas: Replicas) -> None:
    replicas.note_position(parse_lsn("0/200"))
    replicas.note_position(None)
    assert replicas.current_position() == parse_lsn("0/200")


def test_a_replica_never_probed_counts_as_infinitely_behind_and_shows_so(
    replicas: Replicas,
) -> None:
    [replica] = replicas.replicas
    assert replica.lag_now(0.0) == float("inf")
    assert repr(replica) == f"<Replica {NOWHERE} replayed=0/0 lag=None>"
