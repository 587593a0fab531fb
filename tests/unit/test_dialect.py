"""The SQL text each database dialect is sent (db/dialect.py), without a database."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from core.settings import MySQLSettings, Settings
from db import schema
from db.dialect import MYSQL, SQLITE, for_settings

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, 10)


@pytest.mark.parametrize("dialect,sql,params", [
    (MYSQL, "SELECT a FROM t WHERE b = %s AND c = %s", ("x", WHEN)),
    (SQLITE, "SELECT a FROM t WHERE b = ? AND c = ?", ("x", "2024-05-06 07:08:09.000010")),
])
def test_each_dialect_gets_its_placeholders_and_datetimes(dialect, sql, params):
    assert dialect.sql("SELECT a FROM t WHERE b = %s AND c = %s") == sql
    assert dialect.params(("x", WHEN)) == params


def test_the_backend_follows_mysql_host():
    assert for_settings(Settings(mysql=MySQLSettings(host="db.example"))) is MYSQL
    assert for_settings(Settings(mysql=MySQLSettings(host=None))) is SQLITE


def test_sqlite_runs_its_own_schema_bucket_and_table_list():
    """The SQLite dialect's text, executed by SQLite itself: every migration, the hour and day
    buckets, the list of tables."""
    conn = sqlite3.connect(":memory:")
    for version, _ in schema.MIGRATIONS:
        for stmt in schema.statements(SQLITE, version):
            conn.execute(stmt)
    conn.execute(SQLITE.sql("INSERT INTO face_detections (person_id, face_type, confidence, bbox_x, bbox_y,"
                            " bbox_width, bbox_height, detected_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"),
                 SQLITE.params(("p", "unknown", 0.9, 1, 2, 3, 4, WHEN)))
    for bucket, start in (("hour", "2024-05-06 07:00:00"), ("day", "2024-05-06 00:00:00")):
        row = conn.execute(f"SELECT {SQLITE.bucket('detected_at', bucket)}, COUNT(*) FROM face_detections").fetchone()
        assert row == (start, 1)
    tables = {r[0] for r in conn.execute(SQLITE.sql(SQLITE.list_tables()).replace("%%", "%"))}
    assert {"known_faces", "known_face_samples", "unknown_faces", "face_detections", "gallery_changes",
            "api_keys"} <= tables
    assert SQLITE.begin(locked=True) == "BEGIN IMMEDIATE" and SQLITE.begin(locked=False) == "BEGIN"


def test_mysql_text_is_what_pymysql_formats():
    """MySQL text goes through pymysql's % formatting: literal percent signs doubled, the lock's
    name and times as parameters."""
    assert MYSQL.bucket("detected_at", "hour") == "DATE_FORMAT(detected_at, '%%Y-%%m-%%d %%H:00:00')"
    assert MYSQL.bucket("detected_at", "day") % () == "DATE_FORMAT(detected_at, '%Y-%m-%d 00:00:00')"
    assert MYSQL.take_lock(2.5) == ("SELECT GET_LOCK(%s, %s)", (MYSQL.LOCK_NAME, 2.5))
    assert MYSQL.release_lock() == ("SELECT RELEASE_LOCK(%s)", (MYSQL.LOCK_NAME,))
    sql, params = MYSQL.idle_lock_holder(30)
    assert "IS_USED_LOCK(%s)" in sql and params == (MYSQL.LOCK_NAME, 30)
    assert MYSQL.kill_session("17") == ("KILL CONNECTION %s", (17,))
    assert all("ENGINE=InnoDB" in s for s in schema.statements(MYSQL, 1) if s.startswith("CREATE TABLE"))


def test_unavailable_errors_are_each_drivers_own():
    import pymysql

    assert sqlite3.OperationalError in SQLITE.unavailable_errors()
    assert pymysql.err.OperationalError not in SQLITE.unavailable_errors()
    assert {pymysql.err.OperationalError, pymysql.err.InterfaceError} <= set(MYSQL.unavailable_errors())
    assert sqlite3.OperationalError not in MYSQL.unavailable_errors()
    assert TimeoutError in MYSQL.unavailable_errors() and TimeoutError in SQLITE.unavailable_errors()


def test_update_first_takes_the_oldest_rows():
    """The outbox claim: SQLite runs its form on a table; MySQL's is its own ORDER BY/LIMIT UPDATE."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, state TEXT, claim TEXT)")
    conn.executemany("INSERT INTO q (state) VALUES (?)", [("pending",), ("done",), ("pending",), ("pending",)])
    sql = SQLITE.sql(SQLITE.update_first("q", "claim = %s", "state = %s"))
    conn.execute(sql, ("w1", "pending", 2))
    assert conn.execute("SELECT id FROM q WHERE claim = 'w1' ORDER BY id").fetchall() == [(1,), (3,)]
    assert MYSQL.update_first("q", "claim = %s", "state = %s") == \
        "UPDATE q SET claim = %s WHERE state = %s ORDER BY id LIMIT %s"
