"""Reading a request's body and decoding it as a JSON object, whatever way it was framed.

A body that is not JSON, or not a JSON object, raises :class:`MalformedBody` (HTTP 400); one past
``MAX_CONTENT_LENGTH`` is a 413 and an undecoded chunked one a 411 (Werkzeug's errors).
"""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import LengthRequired, RequestEntityTooLarge

from ..services.errors import LedgerError

_LONGEST_INT_LITERAL = 20  # digits of 2**64; longer literals are out of range for every field
OUT_OF_RANGE = 2**64
"""What a longer integer literal reads as (negated if negative): past every field's range, so the
field's rule refuses it with its usual range message, without Python parsing thousands of digits."""


class MalformedBody(LedgerError):
    """The body is not JSON, or not a JSON object."""

    code = "malformed_json"


def json_body() -> dict[str, Any]:
    """The current request's body as a JSON object."""
    return json_object(read_body())


def read_body() -> bytes:
    """The request body; 413 past ``MAX_CONTENT_LENGTH``, however the body is framed.

    With a Content-Length, Werkzeug refuses a body declared too large before reading it. A
    chunked or streamed body declares no length: Werkzeug would stop reading at the limit
    without a word (or read nothing at all), and the cut-off JSON would look malformed. So such
    a body is read here, from the stream that the server ends where the body ends, up to one
    byte past the limit.
    """
    limit = request.max_content_length
    if request.content_length is not None or limit is None:
        return request.get_data(cache=False)
    if not request.environ.get("wsgi.input_terminated"):
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            # This server passes the chunks on undecoded, with no end to stop at.
            raise LengthRequired("send the body with a Content-Length header")
        return b""  # no Content-Length and no chunks: HTTP/1.1 says there is no body
    stream = request.environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise RequestEntityTooLarge()


def parse_int(literal: str) -> int:
    """An integer literal of a body or query string; ``±OUT_OF_RANGE`` if longer than 20 digits.

    Python refuses to convert literals longer than 4300 digits (a ValueError, which would look
    like malformed JSON); anything longer than 20 digits is out of range anyway.
    """
    digits = literal.lstrip("-")
    if len(digits) > _LONGEST_INT_LITERAL:
        return -OUT_OF_RANGE if literal.startswith("-") else OUT_OF_RANGE
    return int(literal)


def _reject_constant(literal: str) -> None:
    raise ValueError(f"{literal} is not valid JSON")


def json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        value = json.loads(body, parse_int=parse_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise MalformedBody("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedBody("the request body must be a JSON object")
    return value
