"""How outbox messages travel after COMMIT: run in this process, or published to Celery.

``create_app`` calls :func:`configure`. The transfer service only enqueues (``db.enqueue``,
written in the transfer's own transaction); this module decides who delivers:

- **No broker** (no ``CELERY_BROKER_URL``, ``make run``): ``db.outbox.publish_locally`` runs
  each task in this process right after its unit commits, on the outbox's own thread (the
  request that committed does not wait for it), in the app's context; once a server serves its
  first request, that thread also relays what was left behind (a delivery that failed, a
  process that died after COMMIT). The messages still go through the ``flask_uow_outbox`` table.
- **Celery** (``CELERY_BROKER_URL`` set): Flask's documented ``celery_init_app`` pattern makes
  a Celery app (``app.extensions["celery"]``) and ``db.outbox.publish_with`` publishes each
  committed message to it; ``make worker`` runs :mod:`ledger.tasks` on a worker, whose
  ``UnitTask`` records each message id with its effect. Run ``flask uow relay`` beside the
  web processes to publish what the broker could not take right after COMMIT.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from .database import db
from .services import notifications

LOCAL_TASKS = {notifications.TRANSFER_COMPLETED: notifications.deliver_transfer_completed}
"""What the in-process delivery runs, by task name (the names ``ledger.tasks`` registers)."""

RELAY_IDLE_SECONDS = 2.0
"""How often the in-process relay thread looks for leftovers when it has nothing to do."""


def configure(app: Flask) -> None:
    """Deliver ``db``'s outbox for ``app``: to Celery if ``CELERY_BROKER_URL`` is set, else here."""
    broker_url = app.config.get("CELERY_BROKER_URL")
    if broker_url:
        db.outbox.publish_with(celery_init_app(app, broker_url))
        return
    db.outbox.publish_locally(LOCAL_TASKS, relay_thread=False)
    _relay_when_served(app)


def _relay_when_served(app: Flask) -> None:
    """Relay leftovers in process if the app's first request comes from a WSGI server
    (``flask run``, gunicorn), which sets ``SERVER_SOFTWARE``.

    Not when the app is built: ``flask ledger migrate`` builds it before the outbox table
    exists. Not for test clients (no ``SERVER_SOFTWARE``) nor ``TESTING`` apps: a test
    process builds many apps, which share ``db``; tests call ``relay_once()`` themselves.
    The hook takes itself out after that first request, so later requests pay nothing.
    """
    if app.testing:
        return

    def start_relay() -> None:
        hooks = app.before_request_funcs
        hooks[None] = [hook for hook in hooks.get(None, []) if hook is not start_relay]
        if "SERVER_SOFTWARE" in request.environ:
            db.outbox.publish_locally(LOCAL_TASKS, idle_seconds=RELAY_IDLE_SECONDS)

    app.before_request(start_relay)


def celery_init_app(app: Flask, broker_url: str) -> Any:
    """Flask's documented Celery pattern: tasks run inside the app's context.

    Messages go to the ``CELERY_QUEUE`` queue (``ledger`` by default), which ``make
    worker`` consumes. Returns the Celery app, also in ``app.extensions["celery"]``.
    """
    from celery import Celery, Task

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(
        {
            "broker_url": broker_url,
            "task_ignore_result": True,
            "task_default_queue": app.config.get("CELERY_QUEUE", "ledger"),
        }
    )
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    from . import tasks  # noqa: F401 - registers the tasks with the Celery app

    return celery_app
