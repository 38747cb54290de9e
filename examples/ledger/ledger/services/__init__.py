"""Business logic: each service function states its own transaction boundary.

One module per service (``customers``, ``accounts``, ``transfers``, ``reports``, ``health``),
and what they share: ``errors`` (what they raise), ``rules`` (the values they accept) and
``notifications`` (what they announce after COMMIT).

Services take and return plain values (ids, ints, strings, frozen dataclasses filled in while
the unit was open) and know nothing about Flask, so the HTTP views, the CLI and a worker thread
all call them the same way, inside an app context.

Most services are one unit of work, declared with ``@db.transactional``: reads with
``read_only=True``, writes with ``retries=3`` so that a deadlock or a serialization failure
runs the whole function again. When a caller already opened a unit (another service, a CLI
command, a test), the call joins it and only the outermost unit commits.

``transfers.transfer`` is the exception: it opens its units explicitly, through two private
functions, because one unit cannot do its job. Two requests with the same idempotency key can
race, and the loser only finds out when its INSERT violates the key's unique constraint. That
transaction is unusable from then on (PostgreSQL aborts it), so the loser's read-write unit
must roll back first; then ``transfer`` opens a second, read-only unit that reads the winner's
transfer and replays it. Called inside a unit of its own caller, it cannot roll back alone,
so it lets the error propagate instead.
"""
