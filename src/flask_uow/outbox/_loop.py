"""The relay loop: publish batches until told to stop, ending cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ._wake import waiter_for

if TYPE_CHECKING:
    from ._outbox import Outbox

logger = logging.getLogger("flask_uow.outbox")

MAX_ERROR_WAIT_SECONDS = 30.0
"""The longest a relay waits before trying again after errors in a row."""


def relay_loop(
    outbox: Outbox,
    *,
    stop: Callable[[], bool] | None,
    idle_seconds: float,
    clean_every: int,
) -> int:
    """Run ``relay_once`` until ``stop()`` or a SIGTERM/SIGINT; return how many were published.

    When nothing is due it waits up to ``idle_seconds``; on PostgreSQL a NOTIFY from a
    committing unit wakes it at once (see ``_wake``). A database or broker error is logged
    and the loop waits ``idle_seconds`` before trying again: the rows it had claimed come
    back when their lease ends; errors in a row double that wait, up to
    ``MAX_ERROR_WAIT_SECONDS``. A PostgreSQL unreachable as the relay starts is no
    different: the relay logs, waits and tries again.
    """
    stopping = threading.Event()
    total = 0
    batches = 0
    errors = 0
    waiter = waiter_for(outbox.db.engine, stopping)
    with _signals_set(stopping), contextlib.closing(waiter):
        while not stopping.is_set() and not (stop is not None and stop()):
            try:
                published = outbox.relay_once()
            except (sa.exc.SQLAlchemyError, OSError, ConnectionError):
                errors += 1
                delay = min(MAX_ERROR_WAIT_SECONDS, idle_seconds * 2 ** (errors - 1))
                logger.warning(
                    "flask-uow outbox relay: a batch failed (%d in a row); trying again in %.1f s",
                    errors,
                    delay,
                    exc_info=True,
                )
                stopping.wait(delay)
                continue
            errors = 0
            total += published
            batches += 1
            if batches % clean_every == 0:
                try:
                    outbox.clean()
                except sa.exc.SQLAlchemyError:
                    logger.warning("flask-uow outbox relay: cleaning failed", exc_info=True)
            if published == 0:
                waiter.wait(idle_seconds)
    logger.info("flask-uow outbox relay stopped after publishing %d message(s)", total)
    return total


@contextmanager
def _signals_set(stopping: threading.Event) -> Iterator[None]:
    """In the main thread, make SIGTERM and SIGINT set ``stopping`` instead of killing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del frame
        logger.info("flask-uow outbox relay: signal %d, stopping after this batch", signum)
        stopping.set()

    previous = {
        number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
