"""Tables used by the library's own tests."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Item(Base):
    """A named row; ``name`` is unique so tests can provoke IntegrityError."""

    __tablename__ = "uow_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    tags: Mapped[list[Tag]] = relationship(back_populates="item")


class Tag(Base):
    __tablename__ = "uow_tag"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("uow_item.id"))
    label: Mapped[str] = mapped_column(String(100))
    item: Mapped[Item] = relationship(back_populates="tags")
