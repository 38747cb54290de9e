"""What must never reach a client or a log: passwords, tracebacks, SQL, driver internals."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

_BODY_PATTERNS = {
    "traceback": re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+"),
    "SQL": re.compile(
        r"\[SQL: |\b(?:SELECT|INSERT INTO|UPDATE|DELETE FROM)\b.*\b(?:FROM|VALUES|SET|WHERE)\b"
        r"|\bpg_\w+\(|\bsqlite_master\b"
    ),
    "driver": re.compile(r"\b(?:sqlalchemy|psycopg|pymysql|sqlite3)\b", re.IGNORECASE),
    "exception": re.compile(r"\b(?:OperationalError|IntegrityError|DBAPIError|ProgrammingError)\b"),
}


def body_leaks(
    body: bytes | str, *, password: str | None = None, echoed: Iterable[str] = ()
) -> list[str]:
    """Names of what ``body`` gives away, if anything (empty list: nothing).

    A JSON body is judged by its decoded strings, with the strings the client sent itself
    (``echoed``) cut out first: a name that happens to read "SELECT x FROM y" may come back
    in a 201, and that is no leak. Other bodies are judged as text.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if password and password in text:
        return ["password", *_scan(text)]
    try:
        document = json.loads(text)
    except ValueError:
        return _scan(text)
    cut = sorted((e for e in echoed if e), key=len, reverse=True)
    values = []
    for value in strings_in(document):
        for sent in cut:
            value = value.replace(sent, "").replace(sent.lower(), "")
        values.append(value)
    return _scan("\n".join(values))


def _scan(text: str) -> list[str]:
    return [name for name, pattern in _BODY_PATTERNS.items() if pattern.search(text)]


def strings_in(value: object) -> list[str]:
    """Every string in a JSON-like value (keys too), to pass as ``echoed``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_in(item)]
    return []
