"""A blog written in Flask-SQLAlchemy style: db.Model-like base, helpers, per-request session.

What changed from its Flask-SQLAlchemy version: ``SQLAlchemy()`` became ``Database()``,
``db.Model`` a ``Base(Model, DeclarativeBase)``, the ``db.session.commit()`` calls were
deleted (the request's unit commits), and the expected IntegrityError is caught around a
``Propagation.NESTED`` unit instead of being followed by ``db.session.rollback()``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask, request
from sqlalchemy import ForeignKey, String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from flask_uow import Database, Model, Propagation


class Base(Model, DeclarativeBase):
    pass


db = Database(metadata=Base.metadata)


class User(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    posts: Mapped[list[BlogPost]] = relationship(back_populates="author")


class BlogPost(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    author: Mapped[User] = relationship(back_populates="posts")


def create_app(config: dict[str, Any]) -> Flask:
    app = Flask(__name__)
    app.config.update(UOW_PER_REQUEST=True, **config)
    db.init_app(app)

    @app.get("/users/<int:user_id>")
    def show_user(user_id: int) -> dict[str, Any]:
        user = db.get_or_404(User, user_id, description="No such user.")
        return {"username": user.username, "posts": len(user.posts)}

    @app.get("/users/by-name/<username>")
    def user_by_name(username: str) -> dict[str, Any]:
        user = db.first_or_404(sa.select(User).filter_by(username=username))
        return {"id": user.id}

    @app.get("/posts")
    def list_posts() -> dict[str, Any]:
        page = db.paginate(sa.select(BlogPost).order_by(BlogPost.id), max_per_page=50)
        return {
            "titles": [post.title for post in page.items],
            "page": page.page,
            "pages": page.pages,
            "total": page.total,
            "next": page.next_num,
        }

    @app.post("/users")
    def create_user() -> tuple[dict[str, Any], int]:
        username = request.get_json()["username"]
        try:
            with db.unit_of_work(propagation=Propagation.NESTED):
                user = User(username=username)
                db.session.add(user)
                db.session.flush()
        except IntegrityError:
            return {"error": f"{username} is taken"}, 409
        return {"id": user.id}, 201

    @app.post("/users/<int:user_id>/posts")
    def create_post(user_id: int) -> tuple[dict[str, Any], int]:
        author = db.get_or_404(User, user_id)
        post = BlogPost(title=request.get_json()["title"], author=author)
        db.session.add(post)
        if post.title == "boom":
            raise RuntimeError("the view failed after adding a post")
        db.session.flush()
        return {"id": post.id}, 201

    @app.errorhandler(500)
    def internal_error(error: Exception) -> tuple[str, int]:
        db.session.rollback()  # Flask-SQLAlchemy habit: harmless, the unit rolls back anyway
        return "Something went wrong.", 500

    return app
