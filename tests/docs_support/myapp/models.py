"""myapp's tables and its Database (a SQLite file unless MYAPP_DATABASE_URL says otherwise)."""

from __future__ import annotations

import os

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Model


class Base(Model, DeclarativeBase):
    pass


class Customer(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


class Account(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    balance: Mapped[int] = mapped_column(default=0)


db = Database(os.environ.get("MYAPP_DATABASE_URL", "sqlite:///myapp.db"), metadata=Base.metadata)
