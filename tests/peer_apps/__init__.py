"""The apps the cost gates count and the HTTP benchmark serves: flask-uow (the ledger, and an
async twin on Quart) and bare SQLAlchemy written the same way, settings read from the
environment (``settings``) so that gunicorn and hypercorn can start them by name; the
extensions' apps (``benchmarks/peers.py``) are built from the same views."""
