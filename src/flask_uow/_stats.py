"""Counters of outermost units of work, safe to update from many threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UnitStats:
    """A snapshot of a ``Database``'s counters.

    Only outermost units (those that own a transaction, REQUIRES_NEW ones included) are
    counted; joined units and savepoints are part of their outermost unit's transaction.
    A read-only unit that finishes normally counts as committed, although it ends with
    ROLLBACK, because nothing went wrong.
    """

    started: int
    committed: int
    rolled_back: int
    retried: int

    @property
    def active(self) -> int:
        """Outermost units entered and not yet ended."""
        return self.started - self.committed - self.rolled_back


class Counters:
    """Mutable counters behind ``Database.stats``."""

    __slots__ = ("_lock", "started", "committed", "rolled_back", "retried")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = 0
        self.committed = 0
        self.rolled_back = 0
        self.retried = 0

    def count_start(self) -> None:
        with self._lock:
            self.started += 1

    def count_end(self, *, committed: bool) -> None:
        with self._lock:
            if committed:
                self.committed += 1
            else:
                self.rolled_back += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retried += 1

    def snapshot(self) -> UnitStats:
        with self._lock:
            return UnitStats(self.started, self.committed, self.rolled_back, self.retried)
