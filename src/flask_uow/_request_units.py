"""The per-request unit and the safety net, shared by the Flask and Quart integrations.

A framework integration opens one unit per request, ends it when the response is ready
and, when the request or app context ends, rolls back every unit that was left open. What
happens to the transactions is the same in both frameworks; only how the integration
learns of requests differs, so it lives in ``_flask.py`` and ``_quart.py``. Nothing here
imports a framework.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from ._errors import UnitOfWorkWarning
from ._hooks import logger
from ._lifecycle import STATE_ACTIVE
from ._runtime import Runtime
from ._unit import UnitOfWork, live_units


def units_above(runtime: Runtime, unit: UnitOfWork) -> list[UnitOfWork]:
    """The units still active that were entered after ``unit`` in this context."""
    units = live_units(runtime)
    for index, candidate in enumerate(units):
        if candidate is unit:
            return units[index + 1 :]
    return []


def units_in_scope(runtime: Runtime, scope: object) -> list[UnitOfWork]:
    """The units still active that were opened in ``scope`` (an app context)."""
    return [unit for unit in live_units(runtime) if unit.scope is scope]


def abandon(leaked: list[UnitOfWork], advice: str) -> None:
    """Roll back each of ``leaked`` (sync units), innermost first, then warn where it began.

    The warning comes after the rollback, so that a warnings filter turning it into an
    error cannot leave a transaction open.
    """
    for unit in reversed(leaked):
        if unit.state is STATE_ACTIVE:
            unit.abandon()
            warn_leaked(unit, advice)


async def abandon_async(leaked: list[UnitOfWork], advice: str) -> None:
    """``abandon()`` for units of either kind: async ones roll back through their driver."""
    for unit in reversed(leaked):
        if unit.state is STATE_ACTIVE:
            if unit.is_async:
                await unit.abandon_async()
            else:
                unit.abandon()
            warn_leaked(unit, advice)


def run_without_units(
    runtime: Runtime, func: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """Call ``func`` in this thread with no unit active (those of the context it was copied
    from belong to another thread): the units it opens are its own, and one it leaves open
    is rolled back, with a warning, when it returns or raises."""
    token = runtime.units.set(())
    try:
        return func(*args, **kwargs)
    finally:
        abandon(live_units(runtime), _SYNC_ADVICE)
        runtime.units.reset(token)


_SYNC_ADVICE = (
    "End units with 'with db.unit_of_work():' or '@db.transactional' so that they close on "
    "every path."
)


def warn_leaked(unit: UnitOfWork, advice: str) -> None:
    """Say that ``unit`` was rolled back because its request or app context ended with it open."""
    warnings.warn(
        f"flask-uow: a unit of work opened at {unit.opened_at} was still open when its "
        f"request or app context ended; it was rolled back. {advice}",
        UnitOfWorkWarning,
        stacklevel=2,
    )


def flag_rollback_on_error(unit: UnitOfWork | None) -> None:
    """An exception reached the app's error handlers: the request's unit will roll back,
    whatever status the handler answers."""
    if unit is not None and unit.state is STATE_ACTIVE:
        unit.set_rollback()


def settle_request_unit(runtime: Runtime, unit: UnitOfWork, status: int, advice: str) -> None:
    """Before a sync request unit ends with its response: roll back the units left open
    above it, and the request's own work when the status is 400 or more."""
    abandon(units_above(runtime, unit), advice)
    if status >= 400 and unit.state is STATE_ACTIVE:
        unit.set_rollback()


async def settle_request_unit_async(
    runtime: Runtime, unit: UnitOfWork, status: int, advice: str
) -> None:
    """``settle_request_unit()`` where units above may be async."""
    await abandon_async(units_above(runtime, unit), advice)
    if status >= 400 and unit.state is STATE_ACTIVE:
        unit.set_rollback()


def end_aborted_request_unit(
    runtime: Runtime, unit: UnitOfWork, error: BaseException | None, advice: str
) -> None:
    """The request ended without a response reaching the unit (teardown): roll it back, with
    the units left open above it.

    A failure to end it is logged, not raised: teardown must go on.
    """
    try:
        abandon(units_above(runtime, unit), advice)
        if error is None:
            unit.set_rollback()
            unit.__exit__(None, None, None)
        else:
            unit.__exit__(type(error), error, error.__traceback__)
    except Exception:
        logger.exception("flask-uow: ending the request's unit of work failed")


async def end_aborted_request_unit_async(
    runtime: Runtime, unit: UnitOfWork, error: BaseException | None, advice: str
) -> None:
    """``end_aborted_request_unit()`` for an async request unit."""
    try:
        await abandon_async(units_above(runtime, unit), advice)
        if error is None:
            unit.set_rollback()
            await unit.__aexit__(None, None, None)
        else:
            await unit.__aexit__(type(error), error, error.__traceback__)
    except Exception:
        logger.exception("flask-uow: ending the request's unit of work failed")
