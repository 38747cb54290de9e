"""Where messages go: a Celery app, or any callable that takes a list of messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ._confirms import ConfirmingChannel
from ._message import Message

Failures = list[tuple[Message, BaseException]]
"""The messages a publish did not deliver, each with why."""


class Target(Protocol):
    """Publishes messages and says which ones failed; it returns once they are confirmed."""

    def __call__(self, messages: list[Message]) -> Failures: ...


class CallableTarget:
    """A user's callable: it takes the whole batch, and raising fails the whole batch."""

    def __init__(self, function: Callable[[list[Message]], object]) -> None:
        self.function = function

    def __call__(self, messages: list[Message]) -> Failures:
        try:
            self.function(messages)
        except Exception as error:
            return [(message, error) for message in messages]
        return []

    def __repr__(self) -> str:
        return f"<publish with {self.function!r}>"


class CeleryTarget:
    """A Celery app: each message goes out with ``send_task``, its id as the task id.

    The app's broker should confirm each publish (RabbitMQ publisher confirms): the
    ``confirm_publish`` transport option is turned on unless the app set it, so that a
    message counts as published only once the broker has it. On RabbitMQ a batch goes out
    on a channel of the target's own in confirm mode, and its acks are awaited once.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        options = app.conf.broker_transport_options
        if options is None:
            options = app.conf.broker_transport_options = {}
        options.setdefault("confirm_publish", True)
        self.confirming: ConfirmingChannel | None = None
        """On RabbitMQ (py-amqp), the channel whose confirms are collected per batch."""
        if options["confirm_publish"] and _is_amqp(app):
            self.confirming = ConfirmingChannel(app)

    def __call__(self, messages: list[Message]) -> Failures:
        if self.confirming is not None:  # RabbitMQ: one wait for the whole batch's acks
            return self.confirming.publish(messages, self._send_once)
        failures: Failures = []
        with self.app.producer_or_acquire() as producer:
            for message in messages:
                try:
                    self._send(message, producer)
                except Exception as error:
                    failures.append((message, error))
        return failures

    def _send_once(self, message: Message, producer: Any) -> None:
        """Send on the confirming channel without kombu's reconnect-and-retry: a retry would
        publish on another channel, whose confirms the batch does not count. A failure fails
        the batch's unconfirmed messages instead, and the relay tries them again."""
        self._send(message, producer, retry=False)

    def _send(self, message: Message, producer: Any, **options: Any) -> None:
        if message.queue is not None:
            options["queue"] = message.queue
        if message.countdown is not None:
            options["countdown"] = message.countdown
        token = _attach(message.headers)
        try:
            self.app.send_task(
                message.task,
                args=message.args,
                kwargs=message.kwargs,
                task_id=message.id,
                headers=dict(message.headers),
                producer=producer,
                **options,
            )
        finally:
            _detach(token)

    def close(self) -> None:
        """Release this target's broker connection (the Celery app's pool is the app's)."""
        if self.confirming is not None:
            self.confirming.close()

    def __repr__(self) -> str:
        return f"<publish to Celery app {self.app.main!r}>"


def _is_amqp(app: Any) -> bool:
    with app.connection_for_write() as connection:
        return connection.transport.driver_type == "amqp" and connection.transport_cls in (
            "amqp",
            "pyamqp",
            "amqps",
        )


def _attach(headers: dict[str, str]) -> object:
    """Make the producer's trace context current while its message is sent (so Celery's
    own instrumentation, if any, continues the producer's trace, not the relay's)."""
    if not headers or "traceparent" not in headers:
        return None
    from opentelemetry import context, propagate

    return context.attach(propagate.extract(headers))


def _detach(token: object) -> None:
    if token is not None:
        from opentelemetry import context

        context.detach(token)  # type: ignore[arg-type]


def as_target(target: object) -> Target:
    """A Celery app (anything with ``send_task``) or a callable, as a ``Target``."""
    if isinstance(target, CeleryTarget) or (hasattr(target, "learn") and callable(target)):
        return target  # already a target (a LocalTarget learns task objects)
    if hasattr(target, "send_task") and hasattr(target, "conf"):
        return CeleryTarget(target)
    if callable(target):
        return CallableTarget(target)
    raise TypeError(
        f"publish_with() takes a Celery app or a function taking a list of messages, and got "
        f"{target!r}."
    )
