"""Publishing a batch to RabbitMQ with pipelined publisher confirms.

Waiting for each message's confirmation before sending the next costs one broker round
trip (and its disk write) per message. Here a batch is published on a channel of its own in
confirm mode, and the broker's acks are collected afterwards: one wait per batch. Delivery
tags count the channel's publishes from 1, so each ack (or nack, possibly ``multiple``)
maps back to its messages.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from ._message import Message

Failures = list[tuple[Message, BaseException]]
CONFIRM_TIMEOUT = 30.0


class BrokerRefused(Exception):
    """RabbitMQ answered a publish with basic.nack (or never confirmed it in time)."""


class ConfirmingChannel:
    """One connection and channel in confirm mode, for one Celery app, used under a lock."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._connection: Any = None
        self._producer: Any = None
        self._pid = 0
        """The process that opened the connection (a forked child must not close it)."""
        self._published = 0
        self._acked = 0
        self._nacked: set[int] = set()

    def publish(self, messages: list[Message], send: Any) -> Failures:
        """Call ``send(message, producer)`` for each message, then wait for the acks.

        A connection kept from an earlier batch that fails on this batch's first message
        died while idle (a broker restart): the batch is sent once more on a new connection.
        Any other failure fails the messages not confirmed yet (the relay retries them).
        """
        with self._lock:
            kept = self._producer is not None
            while True:
                tags = [0] * len(messages)
                try:
                    return self._publish(messages, send, tags)
                except Exception as error:
                    self._close()
                    if kept and messages and not tags[0]:
                        kept = False
                        continue
                    acked = self._acked
                    return [
                        (m, error)
                        for m, tag in zip(messages, tags, strict=True)
                        if not 0 < tag <= acked
                    ]

    def _publish(self, messages: list[Message], send: Any, tags: list[int]) -> Failures:
        producer = self._open()
        with _corked(self._connection.connection.sock):
            for index, message in enumerate(messages):
                send(message, producer)
                self._published += 1
                tags[index] = self._published
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while self._acked < self._published:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerRefused("RabbitMQ did not confirm the batch in time")
            self._connection.drain_events(timeout=remaining)
        refused = self._nacked
        self._nacked = set()
        return [
            (message, BrokerRefused("RabbitMQ refused the message (basic.nack)"))
            for message, tag in zip(messages, tags, strict=True)
            if tag in refused
        ]

    def _open(self) -> Any:
        if self._producer is not None:
            return self._producer
        connection = self.app.connection_for_write(transport_options={"confirm_publish": False})
        connection.ensure_connection(max_retries=1)
        channel = connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._connection = connection
        self._pid = os.getpid()
        self._producer = _declared_once(self.app.amqp.Producer)(channel)
        self._published = self._acked = 0
        return self._producer

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        # RabbitMQ confirms in publish order: the highest tag seen is the count confirmed.
        self._acked = max(self._acked, delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._nacked.update(range(self._acked + 1, delivery_tag + 1))
        else:
            self._nacked.add(delivery_tag)
        self._acked = max(self._acked, delivery_tag)

    def close(self) -> None:
        """Release the confirming connection (the next publish opens another). In a forked
        child the connection is the parent's: it is forgotten, not closed (nor is the lock,
        which a thread of the parent may have held, waited for)."""
        if self._pid not in (0, os.getpid()):
            self._lock = threading.Lock()
            self._connection = self._producer = None
            self._pid = 0
            return
        with self._lock:
            self._close()

    def _close(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None and self._pid == os.getpid():
            try:
                connection.release()
            except Exception:
                pass


def _declared_once(producer_class: Any) -> Any:
    """``producer_class`` checking kombu's cache of declared entities before anything else.

    kombu binds a copy of the queue to the channel on every publish only to find it in that
    cache; here an entity the connection already declared costs one lookup. Anything else
    (a new queue, an uncacheable one) goes through kombu's own ``maybe_declare``.
    """

    class DeclaredOnceProducer(producer_class):  # type: ignore[misc]
        def maybe_declare(self, entity: Any, retry: bool = False, **retry_policy: Any) -> Any:
            if entity and entity.can_cache_declaration:
                channel = self.channel
                if hash(entity) in channel.connection.client.declared_entities:
                    return False
            return super().maybe_declare(entity, retry, **retry_policy)

    return DeclaredOnceProducer


@contextlib.contextmanager
def _corked(sock: Any) -> Iterator[None]:
    """Let the kernel gather a batch's publishes into full TCP segments (Linux ``TCP_CORK``)
    instead of sending one small segment per message, which costs the relay and the broker a
    packet each; uncorking sends what is left at once, before the acks are awaited."""
    cork = getattr(socket, "TCP_CORK", None)
    if cork is None or sock is None:
        yield
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # a closed socket has nothing left to send
            sock.setsockopt(socket.IPPROTO_TCP, cork, 0)
