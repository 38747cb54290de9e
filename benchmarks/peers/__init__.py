"""The apps ``benchmarks.http`` drives: the ledger and its twins, on the ledger's models.

- ``flask_uow_app``: the real ledger (``ledger.app.create_app``) plus a ``bench`` blueprint.
- ``flask_sqlalchemy_app``: the same endpoints written the Flask-SQLAlchemy way: ``db.session``,
  ``commit()`` in the view, the session removed when the app context ends.
- ``sqlalchemy_app``: the same endpoints with bare SQLAlchemy: a ``Session`` per request, by hand.
- ``quart_uow_app`` and ``quart_sqlalchemy_app``: the three hot endpoints on Quart (served by
  hypercorn), with flask-uow's async units and with a bare ``AsyncSession`` per request; they
  are compared with each other only.

The twins reuse the ledger's request parsing, JSON shapes and error handlers, and send the same
SQL statements in the same order (including ``SELECT ... FOR UPDATE`` in account-id order for a
transfer), so that only the way transactions are handled differs. Every app also serves
``GET /bench/noop`` (no database: the framework's ceiling) and ``POST /bench/hold/<account_id>``
(read, wait 50 ms on a simulated external service, then write).

Each app reads its settings from the environment (see ``settings``), so gunicorn (hypercorn)
can start it as ``'benchmarks.peers.flask_uow_app:create_app()'``.
"""
