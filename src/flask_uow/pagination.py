"""Pages of query results: ``Pagination`` (page numbers) and ``KeysetPage`` (cursors).

Both are made by ``Database.paginate()`` and ``Database.paginate_keyset()`` and hold the
items they loaded; asking for another page (``next()``, ``prev()``) runs a query in the unit
of work active at that moment, never in the one that made the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from math import ceil
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["KeysetPage", "Pagination"]


class Pagination(Generic[T]):
    """One page of a ``select``, by page number, as Flask-SQLAlchemy 3.1's ``Pagination``.

    Made by ``db.paginate()``; do not create it by hand. Iterating over it iterates over
    ``items``. ``next()`` and ``prev()`` query the neighbouring page in the current unit of
    work, so call them inside one.
    """

    def __init__(
        self,
        *,
        items: Sequence[T],
        total: int | None,
        page: int,
        per_page: int,
        max_per_page: int | None,
        fetch: Callable[[int, bool], Pagination[T]],
    ) -> None:
        self.items: list[T] = list(items)
        """The items on this page."""
        self.total: int | None = total
        """The number of items on all pages, or None when counting was turned off."""
        self.page: int = page
        """The number of this page, starting at 1."""
        self.per_page: int = per_page
        """The largest number of items on one page."""
        self.max_per_page: int | None = max_per_page
        """The cap applied to ``per_page``, or None for no cap."""
        self._fetch = fetch

    def __repr__(self) -> str:
        return (
            f"<Pagination page {self.page} of {self.pages}, {len(self.items)} items, "
            f"total {self.total}>"
        )

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    @property
    def first(self) -> int:
        """The 1-based number of the first item on this page, or 0 when the page is empty."""
        if not self.items:
            return 0
        return (self.page - 1) * self.per_page + 1

    @property
    def last(self) -> int:
        """The 1-based number of the last item on this page (inclusive), or 0 when empty."""
        first = self.first
        return max(first, first + len(self.items) - 1)

    @property
    def pages(self) -> int:
        """The number of pages; 0 when there are no items or the total is unknown."""
        if not self.total:
            return 0
        return ceil(self.total / self.per_page)

    @property
    def has_prev(self) -> bool:
        """True unless this is page 1."""
        return self.page > 1

    @property
    def prev_num(self) -> int | None:
        """The previous page's number, or None on page 1."""
        return self.page - 1 if self.has_prev else None

    @property
    def has_next(self) -> bool:
        """True when a page follows this one (needs the total: False without a count)."""
        return self.page < self.pages

    @property
    def next_num(self) -> int | None:
        """The next page's number, or None on the last page."""
        return self.page + 1 if self.has_next else None

    def prev(self, *, error_out: bool = False) -> Pagination[T]:
        """Query the previous page in the current unit of work (no count query: same total)."""
        return self._fetch(self.page - 1, error_out)

    def next(self, *, error_out: bool = False) -> Pagination[T]:
        """Query the next page in the current unit of work (no count query: same total)."""
        return self._fetch(self.page + 1, error_out)

    def iter_pages(
        self,
        *,
        left_edge: int = 2,
        left_current: int = 2,
        right_current: int = 4,
        right_edge: int = 2,
    ) -> Iterator[int | None]:
        """Page numbers for a pagination widget, with None where pages are skipped.

        With 20 pages on page 7 and the defaults: 1, 2, None, 5, 6, 7, 8, 9, 10, 11, None,
        19, 20. ``left_edge`` pages from the start, ``left_current`` before the current
        page, ``right_current`` after it (inclusive), ``right_edge`` at the end.
        """
        end = self.pages + 1
        if end == 1:
            return
        left_end = min(1 + left_edge, end)
        yield from range(1, left_end)
        if left_end == end:
            return
        middle_start = max(left_end, self.page - left_current)
        middle_end = min(self.page + right_current + 1, end)
        if middle_start > left_end:
            yield None
        yield from range(middle_start, middle_end)
        if middle_end == end:
            return
        right_start = max(middle_end, end - right_edge)
        if right_start > middle_end:
            yield None
        yield from range(right_start, end)


class KeysetPage(Generic[T]):
    """One page of a ``select`` read after a cursor: ``db.paginate_keyset()``'s result.

    ``next_cursor`` is an opaque string to hand to the client; passing it back as
    ``after=`` reads the rows that follow the last item of this page. It is None on the
    last page. Unlike ``Pagination`` there is no total and no page number: the cost of a
    page does not grow with how far into the table it is.
    """

    def __init__(
        self,
        *,
        items: Sequence[T],
        per_page: int,
        cursor: str | None,
        next_cursor: str | None,
        fetch: Callable[[str], KeysetPage[T]],
    ) -> None:
        self.items: list[T] = list(items)
        """The items on this page, in the order of ``order_by``."""
        self.per_page: int = per_page
        """The largest number of items on one page."""
        self.cursor: str | None = cursor
        """The cursor this page was read after, or None for the first page."""
        self.next_cursor: str | None = next_cursor
        """The cursor of the next page, or None when this is the last page."""
        self._fetch = fetch

    def __repr__(self) -> str:
        more = "more follow" if self.has_next else "last page"
        return f"<KeysetPage {len(self.items)} items, {more}>"

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    @property
    def has_next(self) -> bool:
        """True when rows follow this page."""
        return self.next_cursor is not None

    def next(self) -> KeysetPage[T]:
        """Query the next page in the current unit of work.

        Raises ``ValueError`` on the last page (check ``has_next`` first).
        """
        if self.next_cursor is None:
            raise ValueError("This is the last page: there is no next one (see has_next).")
        return self._fetch(self.next_cursor)
