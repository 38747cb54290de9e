"""Counters of outermost units of work, safe to update from many threads."""

from __future__ import annotations

import itertools
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
    """Mutable counters behind ``Database.stats``, updated without a lock.

    Each count is an ``itertools.count``: ``next()`` on it is one C call, atomic under the
    GIL, so a unit counts itself without a Python call or a lock. ``started`` counts entries;
    ``ended[outcome]`` is the count an outermost unit that ended with ``outcome`` advances.
    """

    __slots__ = (
        "started",
        "committed",
        "rolled_back",
        "retried",
        "read_only",
        "outcome_unknown",
        "ended",
    )

    def __init__(self) -> None:
        self.started = itertools.count()
        self.committed = itertools.count()
        self.rolled_back = itertools.count()
        self.retried = itertools.count()
        self.read_only = itertools.count()
        self.outcome_unknown = itertools.count()
        self.ended: dict[Outcome, itertools.count[int]] = {
            outcome: self.rolled_back for outcome in Outcome
        }
        """The count each outcome of an outermost unit advances (every other: rolled back)."""
        self.ended[OUTCOME_COMMITTED] = self.committed
        self.ended[OUTCOME_READ_ONLY] = self.read_only
        self.ended[OUTCOME_UNKNOWN] = self.outcome_unknown

    def snapshot(self) -> UnitStats:
        """The counts now. Ended units are read before started ones: a unit that starts and
        ends meanwhile then counts as started only, never ``active`` below zero."""
        committed = _value(self.committed)
        rolled_back = _value(self.rolled_back)
        read_only = _value(self.read_only)
        outcome_unknown = _value(self.outcome_unknown)
        return UnitStats(
            _value(self.started),
            committed,
            rolled_back,
            _value(self.retried),
            read_only,
            outcome_unknown,
        )


def _value(count: itertools.count[int]) -> int:
    """The next number ``count`` gives, without taking it: ``repr`` says ``count(7)``."""
    return int(repr(count)[6:-1])
