"""OFFSET pages (db.paginate) against keyset pages (db.paginate_keyset) at growing depth.

    python -m benchmarks.keyset_pagination postgresql+psycopg://postgres@127.0.0.1:5432/test

Makes a scratch database on that server with 200,000 rows, then for each depth times
reading one page of 20 both ways, alternating, and keeps the best of 5 rounds.
"""

from __future__ import annotations

import gc
import sys
import time

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Model
from flask_uow.testing import scratch_database

ROWS = 200_000
PER_PAGE = 20


class Base(Model, DeclarativeBase):
    pass


class BenchRow(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


def main(server_url: str) -> None:
    with scratch_database(server_url, "flask_uow_keyset_bench") as url:
        db = Database(url, metadata=Base.metadata)
        db.create_all()
        with db.engine.begin() as connection:
            rows = [{"id": n, "value": n % 97} for n in range(1, ROWS + 1)]
            connection.execute(sa.insert(BenchRow), rows)
        select = sa.select(BenchRow).order_by(BenchRow.id)
        for page in (2, 100, 1000, 9000):
            with db.unit_of_work(read_only=True):
                # One long page ending just before `page`: its next_cursor points there.
                cursor = db.paginate_keyset(
                    select, order_by=[BenchRow.id], per_page=(page - 1) * PER_PAGE
                ).next_cursor
            gc.collect()  # the long page's objects must not be collected while timing
            best = {"offset": float("inf"), "keyset": float("inf")}
            for _ in range(5):
                for mode in best:
                    start = time.perf_counter()
                    with db.unit_of_work(read_only=True):
                        if mode == "offset":
                            items = db.paginate(select, page=page, per_page=PER_PAGE, count=False)
                        else:
                            items = db.paginate_keyset(
                                select,
                                order_by=[BenchRow.id],
                                after=cursor,
                                per_page=PER_PAGE,
                            )
                        first = items.items[0].id
                    best[mode] = min(best[mode], time.perf_counter() - start)
                    assert first == (page - 1) * PER_PAGE + 1, (mode, first)
            print(
                f"page {page:5}: offset {best['offset'] * 1000:6.2f} ms, "
                f"keyset {best['keyset'] * 1000:6.2f} ms, "
                f"offset/keyset {best['offset'] / best['keyset']:5.1f}x"
            )
        db.dispose()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite://")
