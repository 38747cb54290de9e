"""Celery tasks wired with Flask's ``celery_init_app`` pattern, each task in its own unit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery, Task, shared_task
from celery.contrib.testing.worker import start_worker
from flask import Flask
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Model

from .conftest import ECOSYSTEM, fresh_tables

pytestmark = ECOSYSTEM


class Base(Model, DeclarativeBase):
    pass


class Signup(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(120), unique=True)


db = Database(metadata=Base.metadata)


def celery_init_app(app: Flask) -> Celery:  # Flask's documentation, "Background Tasks"
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


@shared_task(ignore_result=False)
@db.transactional
def record_signup(email: str) -> int:
    signup = Signup(email=email)
    db.session.add(signup)
    db.session.flush()
    return signup.id


@shared_task(ignore_result=False)
@db.transactional
def record_signup_then_fail(email: str) -> None:
    db.session.add(Signup(email=email))
    raise RuntimeError("the task failed after writing")


def create_app(url: str, celery: dict[str, Any]) -> Flask:
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=url, CELERY=celery)
    db.init_app(app)
    celery_init_app(app)
    return app


def emails(app: Flask) -> list[str]:
    with app.app_context(), db.unit_of_work(read_only=True):
        return list(db.session.scalars(sa.select(Signup.email).order_by(Signup.email)))


@pytest.fixture
def url(backend_url: str) -> Iterator[str]:
    fresh_tables(backend_url, Base.metadata)
    yield backend_url
    db.dispose()


def test_eager_tasks_commit_or_roll_back_in_their_own_unit(url: str) -> None:
    app = create_app(url, {"task_always_eager": True})
    assert record_signup.delay("ada@example.com").get() == 1
    with pytest.raises(RuntimeError):
        record_signup_then_fail.delay("bob@example.com").get()
    assert emails(app) == ["ada@example.com"]


@pytest.fixture
def root_logger_kept() -> Iterator[None]:
    """Celery's test worker sets up logging (the root logger's level and handlers) for the
    whole process: give later tests the root logger they had."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.usefixtures("root_logger_kept")
def test_a_worker_thread_runs_tasks_in_units_of_its_own(url: str) -> None:
    app = create_app(
        url, {"broker_url": "memory://", "result_backend": "cache+memory://"}
    )
    celery_app = app.extensions["celery"]
    with start_worker(celery_app, perform_ping_check=False, pool="solo"):
        assert record_signup.delay("grace@example.com").get(timeout=30) == 1
        with pytest.raises(RuntimeError):
            record_signup_then_fail.delay("bob@example.com").get(timeout=30)
    assert emails(app) == ["grace@example.com"]
