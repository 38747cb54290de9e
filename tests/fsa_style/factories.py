"""factory_boy factories bound to flask-uow's session, as a Flask-SQLAlchemy suite binds them."""

from __future__ import annotations

import factory
from factory.alchemy import SQLAlchemyModelFactory

from .blog import BlogPost, User, db


class UserFactory(SQLAlchemyModelFactory):
    class Meta:
        model = User
        # Flask-SQLAlchemy suites write "sqlalchemy_session = db.session"; with the session
        # proxy of flask-uow 0.2 that works as is. A session factory works with any version:
        # it is called each time, so it returns the session of the unit active then.
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "flush"

    username = factory.Sequence(lambda n: f"user{n}")


class BlogPostFactory(SQLAlchemyModelFactory):
    class Meta:
        model = BlogPost
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "flush"

    title = factory.Sequence(lambda n: f"post {n:03}")
    author = factory.SubFactory(UserFactory)
