"""``@db.transactional``: run each call of a function in its own unit of work."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from ._hooks import logger
from ._propagation import Propagation
from ._retry import backoff_seconds
from ._timeouts import Seconds
from ._unit import UnitOfWork

if TYPE_CHECKING:
    from ._runtime import Runtime

P = ParamSpec("P")

R = TypeVar("R")

sleep = time.sleep
"""How the retry loop waits; tests may replace it."""

async_sleep = asyncio.sleep
"""How the retry loop of an async function waits; tests may replace it."""


def transactional_wrapper(
    runtime: Runtime,
    func: Callable[P, R],
    *,
    propagation: Propagation,
    read_only: bool,
    isolation_level: str | None,
    retries: int,
    statement_timeout: Seconds | None = None,
    lock_timeout: Seconds | None = None,
    retry_lock_timeouts: bool = False,
) -> Callable[P, R]:
    """Wrap ``func`` so that each call runs in a unit of work with these options."""
    descriptor: Any = func
    if isinstance(descriptor, staticmethod | classmethod):
        wrapped = transactional_wrapper(
            runtime,
            descriptor.__func__,
            propagation=propagation,
            read_only=read_only,
            isolation_level=isolation_level,
            retries=retries,
            statement_timeout=statement_timeout,
            lock_timeout=lock_timeout,
            retry_lock_timeouts=retry_lock_timeouts,
        )
        return cast(Callable[P, R], type(descriptor)(wrapped))
    _refuse_unsupported(func)
    code = getattr(func, "__code__", None)
    options: dict[str, Any] = {
        "propagation": propagation,
        "read_only": read_only,
        "isolation_level": isolation_level,
        "origin": (code, code.co_firstlineno) if code is not None else repr(func),
    }
    if statement_timeout is not None or lock_timeout is not None or retry_lock_timeouts:
        options["statement_timeout"] = statement_timeout
        options["lock_timeout"] = lock_timeout
        options["retry_lock_timeouts"] = retry_lock_timeouts
    # Build the options once: a bad propagation or isolation level fails at decoration time.
    UnitOfWork(runtime, **options)
    if inspect.iscoroutinefunction(func):
        return cast(Callable[P, R], _async_wrapper(runtime, func, options, retries))

    if retries == 0:

        @functools.wraps(func)
        def run_in_unit(*args: P.args, **kwargs: P.kwargs) -> R:
            with UnitOfWork(runtime, **options):
                return func(*args, **kwargs)

        return run_in_unit

    @functools.wraps(func)
    def run_with_retries(*args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 0
        while True:
            unit = UnitOfWork(
                runtime, retries_left=retries - attempt, attempt=attempt + 1, **options
            )
            try:
                with unit:
                    return func(*args, **kwargs)
            except Exception as error:
                if not unit.will_retry(error):
                    raise
                attempt += 1
                sleep(_before_retry(runtime, func, unit, error, attempt, retries))

    return run_with_retries


def _before_retry(
    runtime: Runtime,
    func: object,
    unit: UnitOfWork,
    error: BaseException,
    attempt: int,
    retries: int,
) -> float:
    """Count, tell observers and log retry number ``attempt``; return how long to wait."""
    next(runtime.counters.retried)
    for observer in runtime.observers:
        observer.unit_retrying(unit, error, attempt + 1)
    delay = backoff_seconds(attempt)
    logger.warning(
        "flask-uow: %s failed with a transient error (%s); retry %d of %d in %.3fs",
        getattr(func, "__qualname__", func),
        type(error).__name__,
        attempt,
        retries,
        delay,
    )
    return delay


def _async_wrapper(
    runtime: Runtime,
    func: Callable[P, Awaitable[R]],
    options: dict[str, Any],
    retries: int,
) -> Callable[P, Awaitable[R]]:
    """Wrap the coroutine function ``func``: each call awaits it inside an async unit."""
    if retries == 0:

        @functools.wraps(func)
        async def run_in_unit(*args: P.args, **kwargs: P.kwargs) -> R:
            async with UnitOfWork(runtime, **options):
                return await func(*args, **kwargs)

        return run_in_unit

    @functools.wraps(func)
    async def run_with_retries(*args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 0
        while True:
            unit = UnitOfWork(
                runtime, retries_left=retries - attempt, attempt=attempt + 1, **options
            )
            try:
                async with unit:
                    return await func(*args, **kwargs)
            except Exception as error:
                if not unit.will_retry(error):
                    raise
                attempt += 1
                delay = _before_retry(runtime, func, unit, error, attempt, retries)
                try:
                    await async_sleep(delay)
                except BaseException:
                    await _call_off_retry(unit)  # cancelled while waiting to retry
                    raise
            except BaseException:
                await _call_off_retry(unit)  # cancelled while the failed attempt ended
                raise

    return run_with_retries


async def _call_off_retry(unit: UnitOfWork) -> None:
    """The retry of ``unit`` will not come: run the rollback hooks it held for it."""
    if unit.holds_rollback_hooks:
        from ._aio import run_to_completion

        await run_to_completion(unit.call_off_retry)


def _refuse_unsupported(func: Callable[..., Any]) -> None:
    if inspect.isasyncgenfunction(func):
        raise TypeError(
            f"@db.transactional cannot wrap the async generator function {func.__qualname__}: "
            "the unit would end when the generator is created, before it runs. Open "
            "'async with db.unit_of_work():' inside the generator, or return a list."
        )
    if inspect.isgeneratorfunction(func):
        raise TypeError(
            f"@db.transactional cannot wrap the generator function {func.__qualname__}: the "
            "unit would end when the generator is created, before it runs. Open "
            "'with db.unit_of_work():' inside the generator, or return a list."
        )
