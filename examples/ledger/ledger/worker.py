"""The Celery worker's app: ``celery -A ledger.worker worker`` (``make worker``).

Builds the ledger's Flask app (``DATABASE_URL`` and ``CELERY_BROKER_URL`` from the
environment, as the web processes do) and hands Celery the app it made.
"""

from __future__ import annotations

from .app import create_app

flask_app = create_app()
if "celery" not in flask_app.extensions:
    raise RuntimeError(
        "The ledger worker needs a broker: set CELERY_BROKER_URL (for example "
        "amqp://guest:guest@127.0.0.1:5672//), for the web app too."
    )
celery_app = flask_app.extensions["celery"]
