"""Several databases: one Database each, units that compose, and what each failure leaves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Model, NoActiveUnitOfWork


class ShopBase(Model, DeclarativeBase):
    pass


class Purchase(ShopBase):
    """In the shop database: one purchase per order number."""

    id: Mapped[int] = mapped_column(primary_key=True)
    order_number: Mapped[str] = mapped_column(String(40), unique=True)


class StockBase(Model, DeclarativeBase):
    pass


class StockLevel(StockBase):
    """In the stock database: how many of each article are left."""

    sku: Mapped[str] = mapped_column(String(40), primary_key=True)
    quantity: Mapped[int]


@pytest.fixture(params=["sqlite+sqlite", "postgresql+mariadb"])
def pair(
    request: pytest.FixtureRequest, tmp_path: Path, server_url: Callable[[str], str]
) -> Iterator[tuple[Database, Database]]:
    """The shop and the stock Databases, on two SQLite files or on PostgreSQL and MariaDB."""
    if request.param == "sqlite+sqlite":
        urls = (f"sqlite:///{tmp_path / 'shop.db'}", f"sqlite:///{tmp_path / 'stock.db'}")
    else:
        urls = (server_url("postgresql"), server_url("mariadb"))
    shop = Database(urls[0], metadata=ShopBase.metadata)
    stock = Database(urls[1], metadata=StockBase.metadata)
    for db in (shop, stock):
        db.drop_all()
        db.create_all()
    with stock.unit_of_work():
        stock.session.add(StockLevel(sku="lamp", quantity=5))
    yield shop, stock
    for db in (shop, stock):
        db.drop_all()
        db.dispose()


def order_numbers(shop: Database) -> list[str]:
    with shop.unit_of_work(read_only=True):
        return list(shop.session.scalars(sa.select(Purchase.order_number).order_by("id")))


def lamps_left(stock: Database) -> int:
    with stock.unit_of_work(read_only=True):
        level = stock.session.get(StockLevel, "lamp")
        assert level is not None
        return level.quantity


def sell_lamp(shop: Database, stock: Database, order_number: str) -> None:
    """Record the purchase in the shop database and take the lamp from the stock database."""
    with shop.unit_of_work(), stock.unit_of_work():
        shop.session.add(Purchase(order_number=order_number))
        level = stock.session.get(StockLevel, "lamp")
        assert level is not None
        level.quantity -= 1


def test_units_of_two_databases_commit_both(pair: tuple[Database, Database]) -> None:
    shop, stock = pair
    sell_lamp(shop, stock, "A-1")
    assert order_numbers(shop) == ["A-1"] and lamps_left(stock) == 4


def test_each_database_has_its_own_session_inside_the_other_ones_unit(
    pair: tuple[Database, Database],
) -> None:
    shop, stock = pair
    with shop.unit_of_work():
        with pytest.raises(NoActiveUnitOfWork):
            stock.session.execute(sa.select(1))  # a unit of shop is not a unit of stock
        with stock.unit_of_work():
            assert shop.session is not stock.session


def test_an_exception_inside_both_units_rolls_both_back(pair: tuple[Database, Database]) -> None:
    shop, stock = pair
    with pytest.raises(LookupError), shop.unit_of_work(), stock.unit_of_work():
        shop.session.add(Purchase(order_number="A-1"))
        stock.session.get_one(StockLevel, "lamp").quantity -= 1
        shop.session.flush()
        stock.session.flush()
        raise LookupError("payment declined")
    assert order_numbers(shop) == [] and lamps_left(stock) == 5


def test_a_failed_commit_of_the_inner_unit_rolls_the_outer_back(
    pair: tuple[Database, Database],
) -> None:
    shop, stock = pair
    with pytest.raises(sa.exc.IntegrityError), shop.unit_of_work(), stock.unit_of_work():
        shop.session.add(Purchase(order_number="A-1"))
        stock.session.add(StockLevel(sku="lamp", quantity=1))  # duplicate key, flushed at COMMIT
    assert order_numbers(shop) == [] and lamps_left(stock) == 5


def test_a_failed_commit_of_the_outer_unit_leaves_the_inner_committed(
    pair: tuple[Database, Database],
) -> None:
    """The documented partial outcome: the inner database committed before the outer failed."""
    shop, stock = pair
    sell_lamp(shop, stock, "A-1")
    with pytest.raises(sa.exc.IntegrityError), shop.unit_of_work(), stock.unit_of_work():
        shop.session.add(Purchase(order_number="A-1"))  # duplicate, flushed at the outer COMMIT
        stock.session.get_one(StockLevel, "lamp").quantity -= 1
    assert order_numbers(shop) == ["A-1"]
    assert lamps_left(stock) == 3  # the second lamp left the stock without a purchase


def test_on_commit_of_the_outer_unit_runs_after_both_committed(
    pair: tuple[Database, Database],
) -> None:
    shop, stock = pair
    seen: list[tuple[list[str], int]] = []
    with shop.unit_of_work() as outer, stock.unit_of_work():
        shop.session.add(Purchase(order_number="A-1"))
        stock.session.get_one(StockLevel, "lamp").quantity -= 1
        outer.on_commit(lambda: seen.append((order_numbers(shop), lamps_left(stock))))
    assert seen == [(["A-1"], 4)]


def test_decorators_of_two_databases_stack(pair: tuple[Database, Database]) -> None:
    shop, stock = pair

    @shop.transactional
    @stock.transactional
    def sell(order_number: str) -> None:
        shop.session.add(Purchase(order_number=order_number))
        stock.session.get_one(StockLevel, "lamp").quantity -= 1

    sell("A-1")
    sell("A-2")
    assert order_numbers(shop) == ["A-1", "A-2"] and lamps_left(stock) == 3
