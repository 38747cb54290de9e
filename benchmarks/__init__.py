"""Benchmarks of flask-uow against bare SQLAlchemy and Flask-SQLAlchemy (``make bench``).

Run the modules with ``python -m benchmarks.overhead`` and ``python -m benchmarks.http`` from
the repository root, or everything with ``python benchmarks/run_all.py``.
"""
