"""@db.transactional keeps what it wraps: name, docstring, signature, binding and types."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import assert_type

import pytest

from flask_uow import Database, Propagation

from .models import Item


def test_wrapped_function_keeps_name_docstring_and_signature(db: Database) -> None:
    def register_customer(name: str, *, vip: bool = False) -> str:
        """Register a customer."""
        return name

    wrapped = db.transactional(register_customer)
    assert wrapped.__name__ == "register_customer"
    assert wrapped.__doc__ == "Register a customer."
    assert inspect.signature(wrapped) == inspect.signature(register_customer)
    assert wrapped.__wrapped__ is register_customer  # type: ignore[attr-defined]


def test_methods_staticmethods_and_classmethods_run_in_a_unit(db: Database) -> None:
    class Service:
        prefix = "svc"

        @db.transactional
        def method(self, name: str) -> bool:
            db.session.add(Item(name=f"{self.prefix}-{name}"))
            return db.current is not None

        @staticmethod
        @db.transactional(propagation=Propagation.REQUIRED)
        def static_inner(name: str) -> bool:
            db.session.add(Item(name=f"static-{name}"))
            return db.current is not None

        @db.transactional
        @staticmethod
        def static_outer(name: str) -> bool:
            db.session.add(Item(name=f"static2-{name}"))
            return db.current is not None

        @db.transactional
        @classmethod
        def klass(cls, name: str) -> bool:
            db.session.add(Item(name=f"{cls.prefix}-cls-{name}"))
            return db.current is not None

    service = Service()
    assert service.method("a")
    assert Service.static_inner("b")
    assert Service.static_outer("c")
    assert Service.klass("d")
    assert db.current is None
    with db.unit_of_work(read_only=True):
        names = sorted(db.session.scalars(Item.__table__.select().with_only_columns(Item.name)))
    assert names == ["static-b", "static2-c", "svc-a", "svc-cls-d"]


def test_generator_functions_sync_and_async_are_refused_with_advice(db: Database) -> None:
    def generate() -> Iterator[int]:
        yield 1

    async def generate_async() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match="inside the generator"):
        db.transactional(generate)
    with pytest.raises(TypeError, match="'async with db.unit_of_work\\(\\):' inside the gen"):
        db.transactional(generate_async)


def test_types_of_decorated_functions_are_preserved(db: Database) -> None:
    @db.transactional
    def bare(x: int) -> str:
        return str(x)

    @db.transactional(retries=2, read_only=True)
    def configured(x: int, y: str = "") -> list[int]:
        return [x]

    assert_type(bare(1), str)
    assert_type(configured(1, y="a"), list[int])
    assert bare(2) == "2"
    assert configured(3) == [3]
