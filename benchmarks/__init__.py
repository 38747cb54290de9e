"""Benchmarks of flask-uow against bare SQLAlchemy and the Flask extensions: ``python -m
benchmarks.<program>`` from the repository root, or all of them with ``benchmarks/run_all.py``.
"""
