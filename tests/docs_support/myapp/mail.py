"""A stand-in mailer: messages "sent" are appended to ``outbox``."""

from __future__ import annotations

outbox: list[str] = []


def send(message: str) -> None:
    outbox.append(message)
