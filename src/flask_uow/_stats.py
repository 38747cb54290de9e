"""Counters of outermost units of work, safe to update from many threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ._lifecycle import OUTCOME_COMMITTED, OUTCOME_READ_ONLY, OUTCOME_UNKNOWN, Outcome


@dataclass(frozen=True, slots=True)
class UnitStats:
    """A snapshot of a ``Database``'s counters.

    Only outermost units (those that own a transaction, REQUIRES_NEW ones included) are
    counted; joined units and savepoints are part of their outermost unit's transaction.
    Every ended unit is counted once, under the way it ended:

    - ``committed``: a read-write unit whose COMMIT succeeded;
    - ``read_only``: a read-only unit that ended normally (it ends with ROLLBACK, and there
      was nothing to write);
    - ``rolled_back``: any unit that ended with ROLLBACK because of an error,
      ``set_rollback()``, a doomed transaction or the safety net;
    - ``outcome_unknown``: the connection was lost while COMMIT was on its way.
    """

    started: int
    committed: int
    rolled_back: int
    retried: int
    read_only: int = 0
    outcome_unknown: int = 0
    replica_reads: int = 0
    """Read-only units that ran on a read replica (see docs/replicas.md)."""
    primary_fallbacks: int = 0
    """Read-only units that ran on the primary because no replica was fresh enough."""
    replica_waits: int = 0
    """Read-only units that waited for a replica to replay their causal position."""

    @property
    def active(self) -> int:
        """Outermost units entered and not yet ended."""
        return (
            self.started - self.committed - self.rolled_back - self.read_only - self.outcome_unknown
        )


class Counters:
    """Mutable counters behind ``Database.stats``."""

    __slots__ = (
        "_lock",
        "started",
        "committed",
        "rolled_back",
        "retried",
        "read_only",
        "outcome_unknown",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = 0
        self.committed = 0
        self.rolled_back = 0
        self.retried = 0
        self.read_only = 0
        self.outcome_unknown = 0

    def count_start(self) -> None:
        with self._lock:
            self.started += 1

    def count_end(self, outcome: Outcome) -> None:
        """Count an outermost unit that ended with ``outcome``."""
        with self._lock:
            if outcome is OUTCOME_COMMITTED:
                self.committed += 1
            elif outcome is OUTCOME_READ_ONLY:
                self.read_only += 1
            elif outcome is OUTCOME_UNKNOWN:
                self.outcome_unknown += 1
            else:
                self.rolled_back += 1

    def count_rolled_back(self) -> None:
        with self._lock:
            self.rolled_back += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retried += 1

    def snapshot(self) -> UnitStats:
        with self._lock:
            return UnitStats(
                self.started,
                self.committed,
                self.rolled_back,
                self.retried,
                self.read_only,
                self.outcome_unknown,
            )
