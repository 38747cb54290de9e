"""factory_boy factories bound to flask-uow's session, as a Flask-SQLAlchemy suite binds them."""

from __future__ import annotations

import factory
from factory.alchemy import SQLAlchemyModelFactory

from .blog import BlogPost, User, db


class UserFactory(SQLAlchemyModelFactory):
    class Meta:
        model = User
        # As in a Flask-SQLAlchemy suite: db.session, captured here at import time, is a
        # proxy that resolves to the session of the unit active when the factory runs.
        sqlalchemy_session = db.session
        sqlalchemy_session_persistence = "flush"

    username = factory.Sequence(lambda n: f"user{n}")


class BlogPostFactory(SQLAlchemyModelFactory):
    class Meta:
        model = BlogPost
        sqlalchemy_session = db.session
        sqlalchemy_session_persistence = "flush"

    title = factory.Sequence(lambda n: f"post {n:03}")
    author = factory.SubFactory(UserFactory)
