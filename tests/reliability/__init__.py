"""Reliability and security suite: faults, load and bad input, with nothing lost.

Quick mode (the default, part of ``make test``) runs every scenario with small counts;
``make stress`` runs ``run_stress.py``, which sets ``FLASK_UOW_STRESS=1`` for full counts and
writes ``RELIABILITY.md`` from the figures each test records.
"""
