"""The Flask-SQLAlchemy-style blog passes its own kind of tests on flask-uow, on every backend."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from flask_uow import NoActiveUnitOfWork

from .blog import BlogPost, User, db
from .factories import BlogPostFactory, UserFactory


def count(model: type[User] | type[BlogPost]) -> int:
    with db.unit_of_work(read_only=True):
        return db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def test_get_or_404_shows_a_user_made_by_a_factory(client: FlaskClient) -> None:
    with db.unit_of_work():
        user = BlogPostFactory(author__username="ada").author
    assert client.get(f"/users/{user.id}").json == {"username": "ada", "posts": 1}


def test_get_or_404_answers_404_for_a_missing_user(client: FlaskClient) -> None:
    answer = client.get("/users/12345")
    assert answer.status_code == 404 and b"No such user." in answer.data


def test_first_or_404_finds_a_user_by_name_or_answers_404(client: FlaskClient) -> None:
    with db.unit_of_work():
        user = UserFactory(username="grace")
    assert client.get("/users/by-name/grace").json == {"id": user.id}
    assert client.get("/users/by-name/nobody").status_code == 404


def test_paginate_reads_the_page_from_the_query_string(client: FlaskClient) -> None:
    with db.unit_of_work():
        for n in range(25):
            BlogPostFactory(title=f"title {n:02}")
    answer = client.get("/posts?page=2&per_page=10").json
    assert answer is not None
    assert answer["titles"] == [f"title {n:02}" for n in range(10, 20)]
    assert (answer["page"], answer["pages"], answer["total"], answer["next"]) == (2, 3, 25, 3)
    assert client.get("/posts?page=4&per_page=10").status_code == 404


def test_a_post_request_commits_at_the_end_of_the_request(client: FlaskClient) -> None:
    answer = client.post("/users", json={"username": "ada"})
    assert answer.status_code == 201
    assert count(User) == 1


def test_a_caught_integrity_error_inside_nested_answers_409(client: FlaskClient) -> None:
    assert client.post("/users", json={"username": "ada"}).status_code == 201
    answer = client.post("/users", json={"username": "ada"})
    assert answer.status_code == 409 and answer.json == {"error": "ada is taken"}
    assert count(User) == 1


def test_an_error_handler_that_rolls_back_answers_its_page_and_nothing_is_kept(
    client: FlaskClient,
) -> None:
    with db.unit_of_work():
        author = UserFactory()
    answer = client.post(f"/users/{author.id}/posts", json={"title": "boom"})
    assert answer.status_code == 500 and answer.data == b"Something went wrong."
    assert count(BlogPost) == 0


def test_factories_need_a_unit_of_work(client: FlaskClient) -> None:
    with pytest.raises(NoActiveUnitOfWork):
        UserFactory()


def test_objects_of_two_units_compare_by_primary_key_not_identity(client: FlaskClient) -> None:
    with db.unit_of_work():
        post = BlogPostFactory()
    with db.unit_of_work(read_only=True):
        author = db.session.get(User, post.author_id)
    assert author is not post.author and author is not None and author.id == post.author.id
