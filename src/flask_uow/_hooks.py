"""Running on_commit and on_rollback callbacks without letting one break the others."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

logger = logging.getLogger("flask_uow")

Hook = Callable[[], object]


def run_hooks(hooks: Iterable[Hook], outcome: str) -> None:
    """Call each hook once, in order. A hook that raises is logged with its traceback.

    The transaction has already ended when hooks run, so a failing hook cannot change its
    outcome; it neither stops the hooks after it nor turns the unit into an error.
    """
    for hook in hooks:
        try:
            hook()
        except Exception:
            logger.exception(
                "flask-uow: the %s hook %r raised after the transaction ended; the %s stands "
                "and the remaining hooks still run",
                outcome,
                hook,
                "commit" if outcome == "on_commit" else "rollback",
            )
