"""Everything that differs between the two databases, in one object per dialect: how SQL is
written (placeholders, parameters, column types, a time bucket), which driver errors mean the
database is unavailable, and the SQL of the gallery lock. The repository asks its dialect
instead of testing a dialect name; `for_settings` is the one place the backend is chosen.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

# schema column types per dialect (db/schema.py writes {pk}, {id}, ... in its statements)
_MYSQL_TYPES = {
    "pk": "BIGINT AUTO_INCREMENT PRIMARY KEY",
    "id": "VARCHAR(128) CHARACTER SET ascii",
    "name": "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    "blob": "BLOB",
    "bigblob": "LONGBLOB",
    "ts": "DATETIME(6)",
    "text": "VARCHAR(64)",
    "url": "VARCHAR(2048) CHARACTER SET utf8mb4",
    "longtext": "MEDIUMTEXT CHARACTER SET utf8mb4",
    "engine": " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
}
_SQLITE_TYPES = {
    "pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "id": "TEXT",
    "name": "TEXT",
    "blob": "BLOB",
    "bigblob": "BLOB",
    "ts": "TEXT",
    "text": "TEXT",
    "url": "TEXT",
    "longtext": "TEXT",
    "engine": "",
}
_BUCKETS = {"hour": "%Y-%m-%d %H:00:00", "day": "%Y-%m-%d 00:00:00"}
_COMMON_ERRORS = (OSError, asyncio.TimeoutError, ConnectionError)


@dataclass(frozen=True)
class Dialect:
    name: str
    types: dict[str, str] = field(repr=False)

    # -- writing SQL: the repository writes %s placeholders and passes datetimes ---------------
    def sql(self, sql: str) -> str:
        return sql

    def param(self, value):
        return value

    def params(self, values: Sequence) -> tuple:
        return tuple(self.param(v) for v in values)

    def bucket(self, column: str, bucket: str) -> str:
        """An expression naming the hour or day of a timestamp column as 'YYYY-MM-DD HH:00:00'."""
        raise NotImplementedError

    def list_tables(self) -> str:
        raise NotImplementedError

    def update_first(self, table: str, assignments: str, condition: str) -> str:
        """UPDATE of the first (by id) rows meeting `condition`; the last parameter is how many."""
        raise NotImplementedError

    def for_update(self) -> str:
        """Suffix of a SELECT that locks the rows it reads until the commit (a locking read sees
        the latest rows). SQLite has none: its write transactions already exclude each other."""
        return ""

    # -- errors that mean "the database is unavailable" (503), not a bug ------------------------
    def unavailable_errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError


class SQLiteDialect(Dialect):
    """Embedded SQLite: ? placeholders, datetimes stored as ISO text, the gallery lock is the
    write lock that BEGIN IMMEDIATE takes."""

    def sql(self, sql: str) -> str:
        return sql.replace("%s", "?")

    def param(self, value):
        if isinstance(value, dt.datetime):
            return value.isoformat(sep=" ", timespec="microseconds")
        return value

    def bucket(self, column: str, bucket: str) -> str:
        return f"strftime('{_BUCKETS[bucket]}', {column})"

    def list_tables(self) -> str:
        return "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%%'"

    def update_first(self, table: str, assignments: str, condition: str) -> str:
        # SQLite's UPDATE takes no ORDER BY/LIMIT unless compiled with it
        return (f"UPDATE {table} SET {assignments} WHERE id IN"
                f" (SELECT id FROM {table} WHERE {condition} ORDER BY id LIMIT %s)")

    def begin(self, locked: bool) -> str:
        # IMMEDIATE takes the write lock up front: it is the cross-process gallery lock, and a
        # transaction that will write must not read first (it could not upgrade if another wrote)
        return "BEGIN IMMEDIATE" if locked else "BEGIN"

    def unavailable_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.OperationalError, *_COMMON_ERRORS)


class MySQLDialect(Dialect):
    """MySQL/MariaDB through pymysql: %s placeholders (literal % doubled), a named lock as the
    gallery lock, with a lease enforced by the next waiter."""

    LOCK_NAME = "face_analytics_gallery"

    def bucket(self, column: str, bucket: str) -> str:
        # pymysql formats the query with %: literal percent signs are doubled there
        return f"DATE_FORMAT({column}, '{_BUCKETS[bucket].replace('%', '%%')}')"

    def list_tables(self) -> str:
        return "SHOW TABLES"

    def update_first(self, table: str, assignments: str, condition: str) -> str:
        # MySQL cannot select from the table it updates in a subquery; its UPDATE takes ORDER BY/LIMIT
        return f"UPDATE {table} SET {assignments} WHERE {condition} ORDER BY id LIMIT %s"

    def for_update(self) -> str:
        return " FOR UPDATE"

    def take_lock(self, wait_s: float) -> tuple[str, tuple]:
        return "SELECT GET_LOCK(%s, %s)", (self.LOCK_NAME, wait_s)

    def idle_lock_holder(self, lease_s: float) -> tuple[str, tuple]:
        """The session holding the lock while asleep for at least the lease, if any."""
        return ("SELECT ID FROM information_schema.PROCESSLIST WHERE ID = IS_USED_LOCK(%s)"
                " AND COMMAND = 'Sleep' AND TIME >= %s", (self.LOCK_NAME, lease_s))

    def kill_session(self, session_id: int) -> tuple[str, tuple]:
        return "KILL CONNECTION %s", (int(session_id),)

    def release_lock(self) -> tuple[str, tuple]:
        return "SELECT RELEASE_LOCK(%s)", (self.LOCK_NAME,)

    def connection_errors(self) -> tuple[type[BaseException], ...]:
        """The driver's own errors: the server went away or the connection broke."""
        import pymysql

        return (pymysql.err.OperationalError, pymysql.err.InterfaceError)

    def unavailable_errors(self) -> tuple[type[BaseException], ...]:
        return (*self.connection_errors(), *_COMMON_ERRORS)


SQLITE = SQLiteDialect("sqlite", _SQLITE_TYPES)
MYSQL = MySQLDialect("mysql", _MYSQL_TYPES)


def for_settings(settings) -> Dialect:
    """MySQL/MariaDB when MYSQL_HOST is set, else the embedded SQLite file."""
    return MYSQL if settings.mysql.host else SQLITE
