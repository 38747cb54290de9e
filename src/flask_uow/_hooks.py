"""Running on_commit, on_rollback and on_outcome_unknown callbacks."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable

logger = logging.getLogger("flask_uow")

Hook = Callable[[], object]


def check_hook(callback: object, what: str, *, allow_async: bool = False) -> None:
    """Refuse a callback that cannot be called, when it is registered rather than after COMMIT.

    Coroutine functions are taken by async units only (they are awaited after the unit
    ends); a sync unit has no event loop to run them on.
    """
    if not allow_async and inspect.iscoroutinefunction(callback):
        raise TypeError(
            f"{what}() of a sync unit of work got the coroutine function {callback!r}, which "
            "it could not await. Register it on an async unit ('async with "
            "db.unit_of_work()'), or pass a plain function."
        )
    if not callable(callback):
        raise TypeError(
            f"{what}() takes a function to call later, with no arguments, and got "
            f"{callback!r}. Pass the function itself (on_commit(send_mail)) or a lambda "
            "(on_commit(lambda: send_mail(user))), not the result of calling it."
        )


def run_hooks(hooks: Iterable[Hook], outcome: str) -> None:
    """Call each hook once, in order. A hook that raises ``Exception`` is logged with its traceback.

    The transaction has already ended when hooks run, so a failing hook cannot change its
    outcome; it neither stops the hooks after it nor turns the unit into an error. A hook
    that raises a ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``,
    ``SystemExit``) stops the remaining hooks and propagates: the process is being
    interrupted, and flask-uow does not stand in its way. A hook of an async unit may be a
    coroutine function: it is awaited in turn.
    """
    for hook in hooks:
        try:
            result = hook()
            if result is not None and inspect.isawaitable(result):
                # An async unit's hook: its unit ends in a greenlet, which can await.
                from sqlalchemy.util import await_only

                await_only(result)
        except Exception:
            logger.exception(
                "flask-uow: the %s hook %r raised after the transaction ended; the outcome "
                "stands and the remaining hooks still run",
                outcome,
                hook,
            )
