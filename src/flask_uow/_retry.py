"""Which database errors are worth running a unit of work again for, and how long to wait."""

from __future__ import annotations

import random

from sqlalchemy import exc as sa_exc

from ._timeouts import is_nowait

POSTGRESQL_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
"""serialization_failure and deadlock_detected."""

MYSQL_TRANSIENT_CODES = frozenset({1213, 1205, 1020})
"""ER_LOCK_DEADLOCK and ER_LOCK_WAIT_TIMEOUT (MySQL and MariaDB), and ER_CHECKREAD ("Record
has changed since last read ...; try restarting transaction"): MariaDB's serialization failure
at REPEATABLE READ and above under ``innodb_snapshot_isolation``, on by default from 11.6."""

ENDED_BEFORE_COMMIT_SQLSTATES = frozenset({"25P03"})
"""idle_in_transaction_session_timeout: the server ended the session, rolling its transaction
back, before the COMMIT that reports the error reached it."""

BACKOFF_BASE_SECONDS = 0.01
BACKOFF_CAP_SECONDS = 0.5


def is_transient(error: BaseException, *, during_commit: bool = False) -> bool:
    """Tell whether ``error`` means "the transaction was rolled back, running it again may work".

    This is the classification ``@db.transactional(retries=...)`` uses; call it from your own
    error handlers (answer 503 and ask the client to retry, say) instead of copying codes.

    ``during_commit`` is true when the error came from sending COMMIT. A connection lost then
    leaves the outcome unknown (the server may have committed), so it is never transient;
    a deadlock or serialization failure reported by COMMIT is, because the server rolled back.
    """
    if not isinstance(error, sa_exc.DBAPIError) or isinstance(error, sa_exc.IntegrityError):
        return False
    if is_nowait(error):  # FOR UPDATE NOWAIT found the row taken: asking again is no retry
        return False
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if error.connection_invalidated:
        return not during_commit or sqlstate in ENDED_BEFORE_COMMIT_SQLSTATES
    if sqlstate in POSTGRESQL_TRANSIENT_SQLSTATES:
        return True
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int) and args[0] in MYSQL_TRANSIENT_CODES:
        return True
    return "database is locked" in str(original)


def backoff_seconds(attempt: int) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1 for the first)."""
    # The exponent stops growing long after the cap is reached: 2 ** 1100 is no float.
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempt - 1, 64))
    return random.uniform(0, ceiling)


def ended_before_commit(error: BaseException) -> bool:
    """True when the server says it ended the session before COMMIT reached it.

    The transaction was rolled back then, although the error arrives as the answer to
    COMMIT: the outcome is known (an idle-in-transaction timeout, SQLSTATE 25P03).
    """
    original = getattr(error, "orig", None)
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return sqlstate in ENDED_BEFORE_COMMIT_SQLSTATES
