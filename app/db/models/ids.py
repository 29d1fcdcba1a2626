"""How every table keeps its ids unique; and a model's table, for Core statements."""

from __future__ import annotations

from sqlalchemy import (
    Table,
)
from sqlalchemy.orm import DeclarativeBase

# SQLite's plain INTEGER PRIMARY KEY hands a deleted newest row's id to the next insert, so a
# deleted batch's id (and its requests' ids) named the next batch: an in-flight answer of the old
# one landed in the new one. AUTOINCREMENT never reuses an id; PostgreSQL's identity columns don't.
IDS_NEVER_REUSED = {"sqlite_autoincrement": True}


def table_of(model: type[DeclarativeBase]) -> Table:
    """A model's table, for Core statements (SQLAlchemy types `__table__` as any FROM clause)."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table
