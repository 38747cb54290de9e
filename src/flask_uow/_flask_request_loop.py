"""One event loop per request to a Flask ``async def`` view, so its unit spans the whole request.

Flask runs each coroutine function (the view, an async hook, an async error handler) with
``async_to_sync``: a new event loop per call, ended when the call returns. An async unit
entered in the view's loop had to end with the view, before ``after_request`` and error
handlers ran. A ``RequestLoop`` instead runs every coroutine function of one request, one
after the other, in one task on one loop in a thread of its own: the request's async unit
is entered when the view starts, its error handlers and ``after_request`` functions run
inside it, and it ends (COMMIT below status 400, ROLLBACK otherwise) when the request's
``after_request`` or teardown says so, as a sync view's unit does.

Nothing here imports Flask: the Flask integration decides which calls come here.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ._request_units import (
    abandon_async,
    end_aborted_request_unit_async,
    flag_rollback_on_error,
    settle_request_unit_async,
)
from ._unit import UnitOfWork, live_units

if TYPE_CHECKING:
    from ._runtime import Runtime

Job = Callable[[], Awaitable[Any]]


class RequestLoop:
    """Runs the coroutine functions of one request in one task, in a thread of its own.

    The thread starts on the first call, with a copy of the calling thread's context (so
    the request and app contexts are current in it), and ends with ``close()``.
    """

    def __init__(self, runtime: Runtime, origin: str, read_only: bool, advice: str) -> None:
        self.runtime = runtime
        self.origin = origin
        self.read_only = read_only
        self.advice = advice
        self.unit: UnitOfWork | None = None
        """The request's unit, entered when the view starts; None before (and with no view)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[Job, Future[Any]] | None] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def open(self) -> bool:
        """Whether calls still run here (False once the request's teardown closed it)."""
        return not self._closed

    def run(self, func: Callable[..., Awaitable[Any]], *, in_unit: bool) -> Callable[..., Any]:
        """A sync callable that runs coroutine function ``func`` in this request's task.

        With ``in_unit`` (the view) the request's unit is entered first. Any unit ``func``
        leaves open is rolled back, with a warning, when it returns or raises.
        """

        def call(*args: Any, **kwargs: Any) -> Any:
            async def job() -> Any:
                if in_unit and self.unit is None:
                    unit = UnitOfWork(self.runtime, read_only=self.read_only, origin=self.origin)
                    await unit.__aenter__()
                    self.unit = unit
                depth = len(live_units(self.runtime))
                try:
                    return await func(*args, **kwargs)
                finally:
                    await abandon_async(live_units(self.runtime)[depth:], self.advice)

            return self._call(job)

        return call

    def flag_rollback(self) -> None:
        """An exception reached the error handlers: the request's unit will roll back."""
        flag_rollback_on_error(self.unit)

    def end(self, status: int) -> None:
        """The response is ready: roll back units left open above the request's unit, then
        end it with COMMIT when ``status`` is below 400 and nothing asked for a rollback,
        else ROLLBACK; its hooks run. A failing COMMIT raises here."""
        unit = self.unit
        if unit is None:
            return
        self.unit = None

        async def job() -> None:
            await settle_request_unit_async(self.runtime, unit, status, self.advice)
            await unit.__aexit__(None, None, None)

        self._call(job)

    def close(self, error: BaseException | None) -> None:
        """The request is torn down: roll back its unit if ``end()`` did not end it (with
        the units left open above it), then stop the loop and its thread."""
        if self._closed:
            return
        self._closed = True
        unit = self.unit
        self.unit = None
        if self._thread is None:
            return
        if unit is not None:

            async def abort() -> None:
                await end_aborted_request_unit_async(self.runtime, unit, error, self.advice)

            self._call(abort)
        assert self._loop is not None and self._queue is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        self._thread.join()

    def _call(self, job: Job) -> Any:
        if self._thread is None:
            self._start()
        assert self._loop is not None and self._queue is not None
        future: Future[Any] = Future()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (job, future))
        return future.result()

    def _start(self) -> None:
        started = threading.Event()

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            queue = self._queue = asyncio.Queue()
            started.set()
            while (item := await queue.get()) is not None:
                job, future = item
                try:
                    result = await job()
                except BaseException as error:  # handed to the caller, which re-raises it
                    future.set_exception(error)
                else:
                    future.set_result(result)

        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run,
            args=(asyncio.run, serve()),
            name="flask-uow-request-loop",
            daemon=True,  # never keeps the process alive if a teardown was skipped
        )
        self._thread.start()
        started.wait()
