"""Whether the database takes writes now, as the writes this process made say: a disk that is
full, a database turned read-only or an I/O error refuses every write while reads still answer,
so a `SELECT 1` alone would call such a database ok. The first refused write marks it failing
(/health answers 503 with why); the next write that commits clears it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.ground.clock import utcnow

# PostgreSQL: disk_full, read_only_sql_transaction, io_error, out of memory.
REFUSED_SQLSTATES = ("53100", "25006", "58030", "53200")
# SQLite says it in words.
REFUSED_SQLITE = ("database or disk is full", "readonly database", "disk i/o error")
WRITES = ("INSERT", "UPDATE", "DELETE")


@dataclass
class WriteHealth:
    failing_since: datetime | None = None
    reason: str | None = None

    def watch(self, engine: AsyncEngine) -> None:
        """Follow the writes and errors of `engine`'s connections."""
        sync = engine.sync_engine
        event.listen(sync, "handle_error", self._on_error)
        event.listen(sync, "before_cursor_execute", self._on_statement)
        event.listen(sync, "commit", self._on_commit)
        event.listen(sync, "rollback", self._on_rollback)

    def _on_error(self, context: Any) -> None:
        self.refused(context.original_exception)

    def refused(self, error: BaseException) -> None:
        """Mark writes failing if `error` is the database refusing writes (the faces' own driver
        calls, which SQLAlchemy's events do not see, report here too)."""
        words = str(error).lower()
        code = getattr(error, "sqlstate", None) or getattr(
            getattr(error, "__cause__", None), "sqlstate", None
        )
        if (isinstance(code, str) and code in REFUSED_SQLSTATES) or any(w in words for w in REFUSED_SQLITE):
            if self.failing_since is None:
                self.failing_since = utcnow()
            self.reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"

    def _on_statement(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:6].upper() in WRITES:
            conn.info["wrote"] = True

    def _on_commit(self, conn: Any) -> None:
        # A commit's own failure comes to _on_error after this: it marks failing again.
        if conn.info.pop("wrote", False):
            self.committed()

    def committed(self) -> None:
        """A write committed: writes work again."""
        self.failing_since = self.reason = None

    def _on_rollback(self, conn: Any) -> None:
        # An invalidated connection (a task cancelled mid-statement) has no info to clear, and
        # asking for it would raise in place of the cancellation.
        if not conn.invalidated:
            conn.info.pop("wrote", None)
