"""Business logic. Each public function is one unit of work, declared with ``@db.transactional``.

Services take and return plain values (ids, ints, strings, frozen dataclasses) and know nothing
about Flask, so the HTTP views, the CLI and a worker thread all call them the same way. When one
service calls another, or a caller already opened ``db.unit_of_work()``, the inner call joins the
outer unit and only the outermost one commits.
"""
