"""Running on_commit, on_rollback and on_outcome_unknown callbacks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

logger = logging.getLogger("flask_uow")

Hook = Callable[[], object]


def check_hook(callback: object, what: str) -> None:
    """Refuse a callback that cannot be called, when it is registered rather than after COMMIT."""
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
    interrupted, and flask-uow does not stand in its way.
    """
    for hook in hooks:
        try:
            hook()
        except Exception:
            logger.exception(
                "flask-uow: the %s hook %r raised after the transaction ended; the outcome "
                "stands and the remaining hooks still run",
                outcome,
                hook,
            )
