"""The only module that talks to the database: MySQL/MariaDB (aiomysql pool) in production,
SQLite (aiosqlite) embedded when MYSQL_HOST is unset. Parameterised SQL only.

Writes that belong together run in one transaction under the gallery lock (a MySQL named
lock, or SQLite's immediate write lock), so concurrent workers never create the same
unknown person twice and a failed request leaves no partial rows.

Every wait is bounded (FA_DB_*): pool checkout, each statement, the gallery lock. A database
that stops answering without closing its sockets costs one request the query timeout, and
then every request fails fast with 503 (HangBreaker) while one probe at a time finds out
whether it is back. MySQL's GET_LOCK has no lease of its own: a session that holds it idle
for longer than the lease (a hung or frozen client whose TCP connection stays up) is killed
by the next waiter, which ends its session, rolls its transaction back and frees the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from api.errors import DatabaseUnavailable
from core.settings import Settings
from db import schema
from db.dialect import MYSQL, SQLITE, Dialect, for_settings

MIGRATION_TIMEOUT_S = 600.0  # schema changes may rewrite tables: not bound by the query timeout
log = logging.getLogger("api.repository")

# The drivers' debug logs print SQL parameters (names, embeddings): never let them through,
# whatever level the application runs at.
for _driver in ("aiosqlite", "aiomysql"):
    logging.getLogger(_driver).setLevel(logging.WARNING)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Tx:
    """A transaction: execute/fetch with %s placeholders on either dialect (the dialect rewrites
    them), each statement bounded by `timeout` seconds (None: SQLite, whose waits are bounded
    by busy_timeout)."""

    def __init__(self, cursor, dialect: Dialect, timeout: float | None = None):
        self.cur, self.dialect, self.timeout = cursor, dialect, timeout

    async def execute(self, sql: str, params: Sequence = (), timeout: float | None = None) -> int:
        async with asyncio.timeout(timeout or self.timeout):
            await self.cur.execute(self.dialect.sql(sql), self.dialect.params(params))
        return self.cur.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        if rows:
            async with asyncio.timeout(self.timeout):
                await self.cur.executemany(self.dialect.sql(sql), [self.dialect.params(r) for r in rows])

    @property
    def lastrowid(self) -> int:
        return int(self.cur.lastrowid)

    async def fetchall(self, sql: str, params: Sequence = ()) -> list[tuple]:
        await self.execute(sql, params)
        return list(await self.cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence = (), timeout: float | None = None):
        await self.execute(sql, params, timeout)
        return await self.cur.fetchone()


class SQLiteTx(Tx):
    """Tx on the aiosqlite connection itself: each statement is one hop to its thread (execute
    and fetch together, no cursor to create and close), where a cursor costs two or three. A
    typical /analyze makes a dozen statements, and each hop is a thread wake-up on both sides."""

    def __init__(self, conn, dialect: Dialect):
        super().__init__(None, dialect)
        self.conn = conn

    async def execute(self, sql: str, params: Sequence = (), timeout: float | None = None) -> int:
        async with asyncio.timeout(timeout):
            self.cur = await self.conn.execute(self.dialect.sql(sql), self.dialect.params(params))
        return self.cur.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        if rows:
            self.cur = await self.conn.executemany(self.dialect.sql(sql), [self.dialect.params(r) for r in rows])

    async def fetchall(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return list(await self.conn.execute_fetchall(self.dialect.sql(sql), self.dialect.params(params)))

    async def fetchone(self, sql: str, params: Sequence = (), timeout: float | None = None):
        async with asyncio.timeout(timeout):
            rows = await self.conn.execute_fetchall(self.dialect.sql(sql), self.dialect.params(params))
        return rows[0] if rows else None


class Database:
    """Connections and transactions for one dialect."""

    dialect: Dialect

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    def transaction(self, locked: bool = False, write: bool = False) -> contextlib.AbstractAsyncContextManager[Tx]:
        """locked: under the database-wide gallery lock; write: a transaction that will write
        without that lock (SQLite must still take its write lock up front)."""
        raise NotImplementedError


class SQLiteDatabase(Database):
    dialect = SQLITE

    def __init__(self, path: Path, lock_wait_s: float = 10.0):
        self.path, self.lock_wait_s = path, lock_wait_s
        self.conn = None
        self.lock = asyncio.Lock()  # one connection per worker: one transaction at a time

    async def start(self) -> None:
        import aiosqlite

        if self.conn is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = await aiosqlite.connect(str(self.path), isolation_level=None, timeout=self.lock_wait_s)
        await self.conn.execute("PRAGMA journal_mode=WAL")
        # WAL's recommended durability: a commit no longer waits for fsync (8.1 -> 0.17 ms per
        # commit on this machine's disk, and requests commit one at a time per worker). The file
        # stays consistent on any crash; only a power loss can drop the last commits. Production
        # runs on MySQL.
        await self.conn.execute("PRAGMA synchronous=NORMAL")
        await self.conn.execute(f"PRAGMA busy_timeout={int(self.lock_wait_s * 1000)}")
        await self.conn.execute("PRAGMA foreign_keys=ON")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    @contextlib.asynccontextmanager
    async def transaction(self, locked: bool = False, write: bool = False) -> AsyncIterator[Tx]:
        if self.conn is None:
            raise DatabaseUnavailable("the database is not connected")
        async with asyncio.timeout(self.lock_wait_s):
            await self.lock.acquire()
        try:
            conn = self.conn
            await conn.execute(self.dialect.begin(locked or write))
            try:
                yield SQLiteTx(conn, self.dialect)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            try:
                await conn.execute("COMMIT")
            except BaseException:
                # a failed COMMIT (deferred constraint, I/O error) leaves the transaction
                # open: without this every later BEGIN on this connection would fail
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
                raise
        finally:
            self.lock.release()


class MySQLDatabase(Database):
    dialect = MYSQL

    def __init__(self, settings: Settings):
        self.mysql = settings.mysql
        self.limits = settings.database
        self.pool = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        import aiomysql

        async with self._starting:  # one pool per worker, however many callers retry at once
            if self.pool is not None:
                return
            # minsize 0: creating the pool opens nothing, so a failed start leaks no connection;
            # the caller's first transaction (migrate) proves the database is there
            self.pool = await aiomysql.create_pool(
                host=self.mysql.host, port=self.mysql.port, user=self.mysql.user,
                password=self.mysql.password, db=self.mysql.database, minsize=0, maxsize=self.mysql.pool_max,
                connect_timeout=self.mysql.connect_timeout_s, autocommit=False, charset="utf8mb4",
                pool_recycle=300,
                # row-lock waits end server-side too, not only at our client-side deadline
                init_command=f"SET SESSION innodb_lock_wait_timeout={max(1, int(self.limits.lock_wait_s))}")

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            await self.pool.wait_closed()
            self.pool = None

    async def _take_gallery_lock(self, tx: Tx) -> None:
        wait, lease = self.limits.lock_wait_s, self.limits.lock_lease_s
        for attempt in range(2):
            row = await tx.fetchone(*self.dialect.take_lock(wait), timeout=wait + tx.timeout)
            if row[0] == 1:
                return
            if attempt:
                break
            # The lease: our holders never sit idle inside the locked transaction, so a holder
            # asleep for longer than the lease is hung; ending its session frees the lock.
            holder = await tx.fetchone(*self.dialect.idle_lock_holder(lease))
            if holder is None:
                break
            log.warning("database session %s held the gallery lock idle for over %ss: killing it",
                        holder[0], lease)
            with contextlib.suppress(*self.dialect.connection_errors()):  # it may have ended by itself
                await tx.execute(*self.dialect.kill_session(holder[0]))
        raise DatabaseUnavailable("timed out waiting for the gallery lock; retry shortly")

    @contextlib.asynccontextmanager
    async def transaction(self, locked: bool = False, write: bool = False) -> AsyncIterator[Tx]:
        if self.pool is None:
            await self.start()
        timeout = self.limits.query_timeout_s
        async with asyncio.timeout(timeout):
            conn = await self.pool.acquire()
        healthy = False
        try:
            async with asyncio.timeout(timeout):
                await conn.ping(reconnect=True)  # a pooled connection may predate a server restart
            cur = await conn.cursor()
            tx = Tx(cur, self.dialect, timeout)
            if locked:
                await self._take_gallery_lock(tx)
            try:
                async with asyncio.timeout(timeout):
                    await conn.begin()
                yield tx
                async with asyncio.timeout(timeout):
                    await conn.commit()
            except self.dialect.unavailable_errors():
                raise  # the connection is closed below: the server rolls back and unlocks
            except BaseException:
                async with asyncio.timeout(timeout):
                    await conn.rollback()
                if locked:
                    await tx.execute(*self.dialect.release_lock())
                healthy = True
                raise
            if locked:
                await tx.execute(*self.dialect.release_lock())
            await cur.close()
            healthy = True
        finally:
            if not healthy and not conn.closed:
                conn.close()  # broken or mid-statement: never hand it out again
            self.pool.release(conn)
            if conn.closed:
                # aiomysql 0.3.2 does not wake pool waiters when a closed connection comes back
                asyncio.ensure_future(self.pool._wakeup())


@dataclass(frozen=True, slots=True)
class NewUnknown:
    """An unknown person created by a photo (its first detection is a DetectionRow)."""
    person_id: str
    embedding: bytes  # float32 [EMBEDDING_DIM]
    crop: bytes  # JPEG of the aligned face
    model_name: str
    model_version: str
    seen_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DetectionRow:
    """One face of one photo, as face_detections stores it (the spec's columns)."""
    person_id: str
    face_type: str  # known | unknown
    confidence: float
    x: int
    y: int
    width: int
    height: int
    age: float | None
    gender: str | None
    gender_confidence: float | None
    similarity: float | None  # None: a new person, nobody matched
    detected_at: dt.datetime


@dataclass
class PersonRow:
    person_id: str
    kind: str
    person_name: str | None
    detection_count: int
    first_seen: object
    last_seen: object
    age: float | None = None
    gender: str | None = None


@dataclass
class GalleryEntry:
    person_id: str
    kind: str | None  # "known" | "unknown" | None: the person is gone
    vector: np.ndarray | None
    name: str | None
    model_version: str | None = None  # the face_multitask version that made `vector`


@dataclass
class Sample:
    sample_id: int
    created_at: object
    model_version: str | None
    has_crop: bool


@dataclass
class Sighting:
    detection_id: int
    detected_at: object
    face_type: str
    confidence: float
    box: tuple[int, int, int, int]
    age: float | None
    gender: str | None
    gender_confidence: float | None
    similarity: float | None


def _emb(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, np.float32)


class HangBreaker:
    """After a database call times out, fail fast instead of letting every request wait out
    its own timeout; one caller at a time (every `retry_s`) probes whether it answers again."""

    def __init__(self, retry_s: float):
        self.retry_s = retry_s
        self.open_until: float | None = None
        self.probing = False

    def admit(self) -> bool:
        """True if this caller may use the database (normal, or it is the probe)."""
        if self.open_until is None:
            return True
        if self.probing or time.monotonic() < self.open_until:
            return False
        self.probing = True
        return True

    def record(self, hung: bool) -> None:
        self.probing = False
        self.open_until = time.monotonic() + self.retry_s if hung else None


class Repository:
    def __init__(self, settings: Settings):
        self.settings = settings
        if for_settings(settings) is MYSQL:
            self.db: Database = MySQLDatabase(settings)
        else:
            self.db = SQLiteDatabase(settings.sqlite_path, settings.database.lock_wait_s)
        self.breaker = HangBreaker(settings.database.hang_retry_s)

    @property
    def dialect(self) -> Dialect:
        return self.db.dialect

    async def start(self) -> None:
        try:
            await self.db.start()
            await self.migrate()
        except self.dialect.unavailable_errors() as exc:
            raise DatabaseUnavailable(f"cannot reach the database ({type(exc).__name__})") from None

    async def close(self) -> None:
        await self.db.close()

    @contextlib.asynccontextmanager
    async def transaction(self, locked: bool = False, write: bool = False) -> AsyncIterator[Tx]:
        if not self.breaker.admit():
            raise DatabaseUnavailable("the database is not answering; retry shortly")
        hung = False
        try:
            async with self.db.transaction(locked, write) as tx:
                yield tx
        except TimeoutError:
            hung = True
            raise DatabaseUnavailable("the database did not answer in time; retry shortly") from None
        except self.dialect.unavailable_errors():
            raise DatabaseUnavailable("the database is unavailable; retry shortly") from None
        finally:
            self.breaker.record(hung)

    async def migrate(self) -> None:
        async with self.db.transaction(locked=True) as tx:
            await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = await tx.fetchone("SELECT MAX(version) FROM schema_version")
            current = row[0] or 0
            for version, _ in schema.MIGRATIONS:
                if version > current:
                    for stmt in schema.statements(self.dialect, version):
                        await tx.execute(stmt, timeout=MIGRATION_TIMEOUT_S)
                    await tx.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    async def ping(self) -> bool:
        try:
            async with self.transaction() as tx:
                await tx.fetchone("SELECT 1")
            return True
        except DatabaseUnavailable:
            return False

    # -- gallery ------------------------------------------------------------------------
    async def load_gallery(self) -> tuple[list[GalleryEntry], int]:
        """Every person's current template and the change-log position it reflects (one snapshot)."""
        async with self.transaction() as tx:
            seq = (await tx.fetchone("SELECT COALESCE(MAX(seq), 0) FROM gallery_changes"))[0]
            known = await tx.fetchall("SELECT person_id, embedding, person_name, model_version FROM known_faces")
            unknown = await tx.fetchall("SELECT person_id, embedding, model_version FROM unknown_faces")
        entries = [GalleryEntry(r[0], "known", _emb(r[1]), r[2], r[3]) for r in known]
        entries += [GalleryEntry(r[0], "unknown", _emb(r[1]), None, r[2]) for r in unknown]
        return entries, int(seq)

    async def changes_since(self, tx: Tx, seq: int) -> tuple[list[GalleryEntry], int, int]:
        """The current state of every person changed after `seq`, in change order (kind None:
        gone), the position to continue from and the number of log rows it covers. Reads
        everything before the caller applies anything, so a database error leaves the caller's
        gallery and position untouched."""
        rows = await tx.fetchall("SELECT seq, person_id FROM gallery_changes WHERE seq > %s ORDER BY seq", (seq,))
        if not rows:
            return [], seq, 0
        pids = list(dict.fromkeys(r[1] for r in rows))
        state: dict[str, GalleryEntry] = {}
        for start in range(0, len(pids), 500):
            part = pids[start:start + 500]
            marks = ", ".join(["%s"] * len(part))
            for r in await tx.fetchall("SELECT person_id, embedding, model_version FROM unknown_faces"
                                       f" WHERE person_id IN ({marks})", part):
                state[r[0]] = GalleryEntry(r[0], "unknown", _emb(r[1]), None, r[2])
            for r in await tx.fetchall("SELECT person_id, embedding, person_name, model_version FROM known_faces"
                                       f" WHERE person_id IN ({marks})", part):
                state[r[0]] = GalleryEntry(r[0], "known", _emb(r[1]), r[2], r[3])
        return [state.get(p, GalleryEntry(p, None, None, None)) for p in pids], int(rows[-1][0]), len(rows)

    async def log_change(self, tx: Tx, person_ids: Sequence[str], now: dt.datetime) -> list[int]:
        """One gallery_changes row per person; returns their seq numbers."""
        seqs = []
        for p in person_ids:
            await tx.execute("INSERT INTO gallery_changes (person_id, changed_at) VALUES (%s, %s)", (p, now))
            seqs.append(tx.lastrowid)
        return seqs

    async def changes_after(self, tx: Tx, seq: int) -> int:
        return int((await tx.fetchone("SELECT COUNT(*) FROM gallery_changes WHERE seq > %s", (seq,)))[0])

    async def lock_persons(self, tx: Tx, person_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """Lock the rows of these people until the commit (MySQL row locks, in id order so two
        lockers cannot deadlock; SQLite has one writer at a time anyway) and return the kind and
        name of each one that exists. Every transaction that changes or removes a person, and
        every sighting written without the gallery lock, goes through here first: a sighting
        and a change of the same person are serialised by the person's row."""
        ids = sorted(set(person_ids))
        if not ids:
            return {}
        lock = tx.dialect.for_update()
        marks = ", ".join(["%s"] * len(ids))
        found = {r[0]: ("known", r[1]) for r in await tx.fetchall(
            f"SELECT person_id, person_name FROM known_faces WHERE person_id IN ({marks}) ORDER BY person_id{lock}",
            ids)}
        for r in await tx.fetchall(
                f"SELECT person_id FROM unknown_faces WHERE person_id IN ({marks}) ORDER BY person_id{lock}", ids):
            found[r[0]] = ("unknown", None)
        return found

    # -- writes of one analysis ------------------------------------------------------------
    async def insert_unknowns(self, tx: Tx, rows: Sequence[NewUnknown]) -> None:
        await tx.executemany(
            "INSERT INTO unknown_faces (person_id, embedding, face_crop, detection_count, first_seen,"
            " last_seen, model_name, model_version, created_at, updated_at)"
            " VALUES (%s, %s, %s, 0, %s, %s, %s, %s, %s, %s)",
            [(r.person_id, r.embedding, r.crop, r.seen_at, r.seen_at, r.model_name, r.model_version,
              r.seen_at, r.seen_at) for r in rows])

    async def bump_unknowns(self, tx: Tx, counts: dict[str, int], now: dt.datetime) -> None:
        # atomic increments: exact under any number of concurrent writers
        await tx.executemany(
            "UPDATE unknown_faces SET detection_count = detection_count + %s, last_seen = %s,"
            " updated_at = %s WHERE person_id = %s",
            [(n, now, now, pid) for pid, n in counts.items()])

    async def insert_detections(self, tx: Tx, rows: Sequence[DetectionRow]) -> None:
        await tx.executemany(
            "INSERT INTO face_detections (person_id, face_type, confidence, bbox_x, bbox_y, bbox_width,"
            " bbox_height, age, gender, gender_confidence, similarity, detected_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(r.person_id, r.face_type, r.confidence, r.x, r.y, r.width, r.height, r.age, r.gender,
              r.gender_confidence, r.similarity, r.detected_at) for r in rows])

    # -- known people ------------------------------------------------------------------------
    async def known_by_name(self, tx: Tx, name: str):
        return await tx.fetchone(
            "SELECT person_id, embedding, sample_count FROM known_faces WHERE person_name = %s", (name,))

    async def person_id_taken(self, tx: Tx, person_id: str) -> bool:
        for table in ("known_faces", "unknown_faces"):
            if await tx.fetchone(f"SELECT 1 FROM {table} WHERE person_id = %s", (person_id,)):
                return True
        return False

    async def insert_known(self, tx: Tx, *, person_id: str, name: str, embedding: bytes, crop: bytes | None,
                           image: bytes | None, age: float | None, gender: str | None,
                           model: tuple[str, str], now: dt.datetime, sample_count: int = 1) -> None:
        await tx.execute(
            "INSERT INTO known_faces (person_id, person_name, embedding, sample_count, face_crop, image_data,"
            " age, gender, model_name, model_version, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (person_id, name, embedding, sample_count, crop, image, age, gender, model[0], model[1], now, now))

    async def add_known_sample(self, tx: Tx, *, person_id: str, embedding: bytes, crop: bytes | None,
                               image: bytes | None, model: tuple[str, str], now: dt.datetime) -> None:
        await tx.execute(
            "INSERT INTO known_face_samples (person_id, embedding, face_crop, image_data, model_name,"
            " model_version, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (person_id, embedding, crop, image, model[0], model[1], now))

    async def known_samples(self, tx: Tx, person_id: str) -> np.ndarray:
        rows = await tx.fetchall("SELECT embedding FROM known_face_samples WHERE person_id = %s ORDER BY id",
                                 (person_id,))
        return np.stack([_emb(r[0]) for r in rows]) if rows else np.zeros((0, 128), np.float32)

    async def update_known_template(self, tx: Tx, person_id: str, embedding: bytes, count: int,
                                    now: dt.datetime) -> None:
        await tx.execute("UPDATE known_faces SET embedding = %s, sample_count = %s, updated_at = %s"
                         " WHERE person_id = %s", (embedding, count, now, person_id))

    async def promote_unknown(self, tx: Tx, unknown_id: str, known_id: str) -> int:
        """Attribute an unknown person's history to a known one and drop the unknown."""
        n = await self.move_detections(tx, unknown_id, known_id, "known")
        await tx.execute("DELETE FROM unknown_faces WHERE person_id = %s", (unknown_id,))
        return n

    async def move_detections(self, tx: Tx, from_id: str, to_id: str, face_type: str) -> int:
        return await tx.execute("UPDATE face_detections SET person_id = %s, face_type = %s WHERE person_id = %s",
                                (to_id, face_type, from_id))

    async def unknown_row(self, tx: Tx, person_id: str):
        """(embedding, face_crop, detection_count, first_seen, last_seen, model_name, model_version)."""
        return await tx.fetchone(
            "SELECT embedding, face_crop, detection_count, first_seen, last_seen, model_name, model_version"
            " FROM unknown_faces WHERE person_id = %s", (person_id,))

    async def known_row(self, tx: Tx, person_id: str):
        """(person_name, embedding, sample_count)."""
        return await tx.fetchone("SELECT person_name, embedding, sample_count FROM known_faces WHERE person_id = %s",
                                 (person_id,))

    async def absorb_known(self, tx: Tx, from_id: str, into_id: str) -> None:
        """Move a known person's samples and detections to another known person and drop it."""
        await tx.execute("UPDATE known_face_samples SET person_id = %s WHERE person_id = %s", (into_id, from_id))
        await self.move_detections(tx, from_id, into_id, "known")
        await tx.execute("DELETE FROM known_faces WHERE person_id = %s", (from_id,))

    async def absorb_unknown(self, tx: Tx, *, from_id: str, into_id: str, embedding: bytes, first_seen: dt.datetime,
                             last_seen: dt.datetime, count: int, now: dt.datetime) -> None:
        """Unknown into unknown: detections and counts move, the template is the one given."""
        await self.move_detections(tx, from_id, into_id, "unknown")
        await tx.execute("DELETE FROM unknown_faces WHERE person_id = %s", (from_id,))
        await tx.execute(
            "UPDATE unknown_faces SET embedding = %s, detection_count = detection_count + %s,"
            " first_seen = %s, last_seen = %s, updated_at = %s WHERE person_id = %s",
            (embedding, count, first_seen, last_seen, now, into_id))

    async def samples(self, person_id: str) -> list[Sample] | None:
        """A known person's samples; an unknown person's one stored face as sample 0; None: no person."""
        async with self.transaction() as tx:
            if await tx.fetchone("SELECT 1 FROM known_faces WHERE person_id = %s", (person_id,)):
                rows = await tx.fetchall(
                    "SELECT id, created_at, model_version, face_crop IS NOT NULL FROM known_face_samples"
                    " WHERE person_id = %s ORDER BY id", (person_id,))
                return [Sample(int(r[0]), r[1], r[2], bool(r[3])) for r in rows]
            r = await tx.fetchone("SELECT first_seen, model_version, face_crop IS NOT NULL FROM unknown_faces"
                                  " WHERE person_id = %s", (person_id,))
        return None if r is None else [Sample(0, r[0], r[1], bool(r[2]))]

    async def sample_crop(self, person_id: str, sample_id: int) -> bytes | None:
        async with self.transaction() as tx:
            if sample_id == 0:
                r = await tx.fetchone("SELECT face_crop FROM unknown_faces WHERE person_id = %s", (person_id,))
            else:
                r = await tx.fetchone("SELECT face_crop FROM known_face_samples WHERE person_id = %s AND id = %s",
                                      (person_id, sample_id))
        return None if r is None or r[0] is None else bytes(r[0])

    async def delete_sample(self, tx: Tx, person_id: str, sample_id: int) -> int:
        """Delete one sample; the person's own crop and image become those of its first remaining sample."""
        n = await tx.execute("DELETE FROM known_face_samples WHERE person_id = %s AND id = %s",
                             (person_id, sample_id))
        first = await tx.fetchone("SELECT face_crop, image_data FROM known_face_samples WHERE person_id = %s"
                                  " ORDER BY id LIMIT 1", (person_id,))
        if n and first:
            await tx.execute("UPDATE known_faces SET face_crop = %s, image_data = %s WHERE person_id = %s",
                             (first[0], first[1], person_id))
        return n

    async def sample_ids(self, tx: Tx, person_id: str) -> list[int]:
        return [int(r[0]) for r in await tx.fetchall(
            "SELECT id FROM known_face_samples WHERE person_id = %s ORDER BY id", (person_id,))]

    async def sightings(self, person_id: str, limit: int, offset: int) -> tuple[int, list[Sighting]]:
        async with self.transaction() as tx:
            total = (await tx.fetchone("SELECT COUNT(*) FROM face_detections WHERE person_id = %s",
                                       (person_id,)))[0]
            rows = await tx.fetchall(
                "SELECT id, detected_at, face_type, confidence, bbox_x, bbox_y, bbox_width, bbox_height, age,"
                " gender, gender_confidence, similarity FROM face_detections WHERE person_id = %s"
                " ORDER BY detected_at DESC, id DESC LIMIT %s OFFSET %s", (person_id, limit, offset))
        return int(total), [Sighting(int(r[0]), r[1], r[2], float(r[3]), (int(r[4]), int(r[5]), int(r[6]), int(r[7])),
                                     r[8], r[9], r[10], r[11]) for r in rows]

    async def template(self, person_id: str) -> tuple[str, str | None, np.ndarray, str | None] | None:
        """(kind, name, template, face_multitask version of the template) of a person."""
        async with self.transaction() as tx:
            r = await tx.fetchone("SELECT person_name, embedding, model_version FROM known_faces WHERE person_id = %s",
                                  (person_id,))
            if r:
                return "known", r[0], _emb(r[1]), r[2]
            r = await tx.fetchone("SELECT embedding, model_version FROM unknown_faces WHERE person_id = %s", (person_id,))
        return ("unknown", None, _emb(r[0]), r[1]) if r else None

    async def rename_known(self, tx: Tx, person_id: str, name: str, now: dt.datetime) -> int:
        return await tx.execute("UPDATE known_faces SET person_name = %s, updated_at = %s WHERE person_id = %s",
                                (name, now, person_id))

    async def delete_person(self, tx: Tx, person_id: str) -> int:
        n = 0
        for table in ("known_faces", "known_face_samples", "unknown_faces", "face_detections"):
            n += await tx.execute(f"DELETE FROM {table} WHERE person_id = %s", (person_id,))
        return n

    # -- reads -------------------------------------------------------------------------------
    async def stats(self, since: dt.datetime, top: int = 10) -> dict:
        async with self.transaction() as tx:
            known = (await tx.fetchone("SELECT COUNT(*) FROM known_faces"))[0]
            unknown = (await tx.fetchone("SELECT COUNT(*) FROM unknown_faces"))[0]
            total = (await tx.fetchone("SELECT COUNT(*) FROM face_detections"))[0]
            recent = (await tx.fetchone("SELECT COUNT(*) FROM face_detections WHERE detected_at >= %s",
                                        (since,)))[0]
            rows = await tx.fetchall(
                "SELECT person_id, detection_count, last_seen FROM unknown_faces"
                " ORDER BY detection_count DESC, last_seen DESC LIMIT %s", (top,))
        return {"known_faces": int(known), "unknown_faces": int(unknown), "total_detections": int(total),
                "recent_detections_24h": int(recent),
                "top_unknown_faces": [{"person_id": r[0], "detection_count": int(r[1]), "last_seen": r[2]}
                                      for r in rows]}

    async def list_persons(self, kind: str | None, limit: int, offset: int,
                           search: str | None = None) -> tuple[int, list[PersonRow]]:
        """``search``: case-insensitive substring of a known person's name or of any person id."""
        parts, params = [], []
        known_sql = ("SELECT k.person_id, 'known', k.person_name,"
                     " (SELECT COUNT(*) FROM face_detections d WHERE d.person_id = k.person_id),"
                     " k.created_at, k.updated_at, k.age, k.gender FROM known_faces k")
        # named columns: alone in a derived table, MySQL refuses two columns called NULL
        unknown_sql = ("SELECT person_id, 'unknown' AS kind, NULL AS person_name, detection_count,"
                       " first_seen, last_seen, NULL AS age, NULL AS gender FROM unknown_faces")
        if search:
            # '!' escapes LIKE's wildcards the same way on both dialects
            pattern = "%" + search.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
            known_sql += (" WHERE LOWER(k.person_name) LIKE %s ESCAPE '!'"
                          " OR LOWER(k.person_id) LIKE %s ESCAPE '!'")
            unknown_sql += " WHERE LOWER(person_id) LIKE %s ESCAPE '!'"
        if kind in (None, "known"):
            parts.append(known_sql)
            params += [pattern, pattern] if search else []
        if kind in (None, "unknown"):
            parts.append(unknown_sql)
            params += [pattern] if search else []
        union = " UNION ALL ".join(parts)
        async with self.transaction() as tx:
            total = (await tx.fetchone(f"SELECT COUNT(*) FROM ({union}) AS p", params))[0]
            rows = await tx.fetchall(f"SELECT * FROM ({union}) AS p ORDER BY 1 LIMIT %s OFFSET %s",
                                     (*params, limit, offset))
        return int(total), [PersonRow(*r) for r in rows]

    async def person_crop(self, person_id: str) -> bytes | None:
        """The stored aligned face crop (JPEG) of a known or unknown person."""
        async with self.transaction() as tx:
            for table in ("known_faces", "unknown_faces"):
                row = await tx.fetchone(f"SELECT face_crop FROM {table} WHERE person_id = %s", (person_id,))
                if row:
                    return row[0]
        return None

    async def detections_per_bucket(self, since: dt.datetime, bucket: str) -> dict[str, int]:
        """Detections since ``since`` per hour or per day: {"YYYY-MM-DD HH:00:00": count}."""
        expr = self.dialect.bucket("detected_at", bucket)
        async with self.transaction() as tx:
            rows = await tx.fetchall(f"SELECT {expr} AS b, COUNT(*) FROM face_detections"
                                     " WHERE detected_at >= %s GROUP BY b", (since,))
        return {str(r[0]): int(r[1]) for r in rows}

    async def get_person(self, person_id: str) -> PersonRow | None:
        async with self.transaction() as tx:
            r = await tx.fetchone(
                "SELECT person_id, 'known', person_name, (SELECT COUNT(*) FROM face_detections d"
                " WHERE d.person_id = k.person_id), created_at, updated_at, age, gender"
                " FROM known_faces k WHERE person_id = %s", (person_id,))
            if r is None:
                r = await tx.fetchone(
                    "SELECT person_id, 'unknown', NULL, detection_count, first_seen, last_seen, NULL, NULL"
                    " FROM unknown_faces WHERE person_id = %s", (person_id,))
        return PersonRow(*r) if r else None

    # -- re-embedding after a model change ----------------------------------------------------
    async def stale_crops(self, tx: Tx, model_version: str) -> list[tuple[str, object, str, bytes]]:
        """(kind, row key, person_id, crop) of embeddings made by another model version; kind is
        "sample" (a known person's sample, keyed by id) or "unknown" (keyed by person_id)."""
        samples = await tx.fetchall(
            "SELECT id, person_id, face_crop FROM known_face_samples WHERE face_crop IS NOT NULL"
            " AND (model_version IS NULL OR model_version <> %s)", (model_version,))
        unknown = await tx.fetchall(
            "SELECT person_id, person_id, face_crop FROM unknown_faces WHERE face_crop IS NOT NULL"
            " AND (model_version IS NULL OR model_version <> %s)", (model_version,))
        return [("sample", r[0], r[1], r[2]) for r in samples] + [("unknown", r[0], r[1], r[2]) for r in unknown]

    async def set_embedding(self, tx: Tx, kind: str, key, embedding: bytes, model: tuple[str, str],
                            now: dt.datetime) -> None:
        if kind == "sample":
            await tx.execute("UPDATE known_face_samples SET embedding = %s, model_name = %s, model_version = %s"
                             " WHERE id = %s", (embedding, model[0], model[1], key))
        else:
            await tx.execute("UPDATE unknown_faces SET embedding = %s, model_name = %s, model_version = %s,"
                             " updated_at = %s WHERE person_id = %s", (embedding, model[0], model[1], now, key))

    async def set_known_model(self, tx: Tx, person_id: str, model: tuple[str, str]) -> None:
        await tx.execute("UPDATE known_faces SET model_name = %s, model_version = %s WHERE person_id = %s",
                         (model[0], model[1], person_id))

    async def api_key_exists(self, digest: str) -> bool:
        async with self.transaction() as tx:
            return await tx.fetchone("SELECT 1 FROM api_keys WHERE key_hash = %s", (digest,)) is not None

    async def add_api_key(self, digest: str, label: str) -> None:
        async with self.transaction() as tx:
            await tx.execute("INSERT INTO api_keys (key_hash, label, created_at) VALUES (%s, %s, %s)",
                             (digest, label, utcnow()))

    async def purge_unknown_before(self, cutoff: dt.datetime, on_purged=None) -> list[str]:
        """`on_purged(tx, ids)`: awaited inside the transaction (the webhook events of the purge)."""
        async with self.transaction(locked=True) as tx:
            # a locking read (the latest rows, locked): a sighting written without the gallery
            # lock either committed first (and its last_seen keeps the person) or waits for us
            lock = tx.dialect.for_update()
            ids = [r[0] for r in await tx.fetchall(
                f"SELECT person_id FROM unknown_faces WHERE last_seen < %s ORDER BY person_id{lock}", (cutoff,))]
            for pid in ids:
                await self.delete_person(tx, pid)
            await self.log_change(tx, ids, utcnow())
            if ids and on_purged is not None:
                await on_purged(tx, ids)
        return ids

    # -- gallery export and import (api.gallery_transfer) -----------------------------------
    async def export_rows(self, tx: Tx) -> tuple[list[tuple], list[tuple], list[tuple]]:
        """Every known person, known sample and unknown person, for a portable copy."""
        known = await tx.fetchall(
            "SELECT person_id, person_name, age, gender, created_at, updated_at FROM known_faces ORDER BY id")
        samples = await tx.fetchall(
            "SELECT person_id, embedding, face_crop, model_name, model_version, created_at"
            " FROM known_face_samples ORDER BY id")
        unknown = await tx.fetchall(
            "SELECT person_id, embedding, face_crop, model_name, model_version, detection_count, first_seen,"
            " last_seen, created_at FROM unknown_faces ORDER BY id")
        return known, samples, unknown

    async def import_unknown(self, tx: Tx, *, person_id: str, embedding: bytes, crop: bytes | None,
                             model: tuple[str, str], detection_count: int, first_seen: dt.datetime,
                             last_seen: dt.datetime, created_at: dt.datetime, now: dt.datetime) -> None:
        await tx.execute(
            "INSERT INTO unknown_faces (person_id, embedding, face_crop, detection_count, first_seen, last_seen,"
            " model_name, model_version, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (person_id, embedding, crop, detection_count, first_seen, last_seen, model[0], model[1], created_at, now))

    # -- webhooks (api.webhooks) ---------------------------------------------------------------
    async def subscribed_event_types(self) -> set[str]:
        """Every event type some subscription wants ("*" included as such)."""
        async with self.transaction() as tx:
            rows = await tx.fetchall("SELECT events FROM webhook_subscriptions")
        return {e for (events,) in rows for e in events.split(",") if e}

    async def subscriptions_for_events(self, tx: Tx) -> list[tuple[int, str]]:
        """(id, comma list of event types) of every subscription, inside the event's transaction."""
        return [(int(r[0]), r[1]) for r in await tx.fetchall("SELECT id, events FROM webhook_subscriptions")]

    async def queue_deliveries(self, tx: Tx, rows: Sequence[tuple]) -> None:
        """rows: (subscription_id, event_id, event_type, payload json, now)."""
        await tx.executemany(
            "INSERT INTO webhook_outbox (subscription_id, event_id, event_type, payload, state, attempts,"
            " next_attempt_at, created_at) VALUES (%s, %s, %s, %s, 'pending', 0, %s, %s)",
            [(s, e, t, p, now, now) for s, e, t, p, now in rows])

    async def unknown_counts(self, tx: Tx, person_ids: Sequence[str]) -> dict[str, int]:
        if not person_ids:
            return {}
        marks = ", ".join(["%s"] * len(person_ids))
        return {r[0]: int(r[1]) for r in await tx.fetchall(
            f"SELECT person_id, detection_count FROM unknown_faces WHERE person_id IN ({marks})", list(person_ids))}

    async def add_subscription(self, url: str, secret: str, events: str, description: str | None) -> tuple:
        now = utcnow()
        async with self.transaction() as tx:
            await tx.execute("INSERT INTO webhook_subscriptions (url, secret, events, description, created_at)"
                             " VALUES (%s, %s, %s, %s, %s)", (url, secret, events, description, now))
            sid = tx.lastrowid
        return sid, now

    async def list_subscriptions(self) -> list[tuple]:
        """(id, url, events, description, created_at, pending, delivered, failed, last_error); no secrets."""
        async with self.transaction() as tx:
            subs = await tx.fetchall("SELECT id, url, events, description, created_at FROM webhook_subscriptions"
                                     " ORDER BY id")
            counts = await tx.fetchall("SELECT subscription_id, state, COUNT(*) FROM webhook_outbox"
                                       " GROUP BY subscription_id, state")
            errors = await tx.fetchall(
                "SELECT o.subscription_id, o.last_error FROM webhook_outbox o WHERE o.id IN"
                " (SELECT MAX(id) FROM webhook_outbox WHERE last_error IS NOT NULL GROUP BY subscription_id)")
        by = {(int(s), st): int(n) for s, st, n in counts}
        last = {int(s): e for s, e in errors}
        return [(int(r[0]), r[1], r[2], r[3], r[4], by.get((int(r[0]), "pending"), 0),
                 by.get((int(r[0]), "delivered"), 0), by.get((int(r[0]), "failed"), 0), last.get(int(r[0])))
                for r in subs]

    async def delete_subscription(self, sid: int) -> bool:
        async with self.transaction() as tx:
            n = await tx.execute("DELETE FROM webhook_subscriptions WHERE id = %s", (sid,))
            await tx.execute("DELETE FROM webhook_outbox WHERE subscription_id = %s AND state = 'pending'", (sid,))
        return n > 0

    async def claim_deliveries(self, claim: str, now: dt.datetime, lease_until: dt.datetime,
                               limit: int) -> list[tuple]:
        """Take up to `limit` due deliveries for this worker: one statement marks them with `claim`
        and moves them out of reach until `lease_until`, so no two workers send the same one at
        once, and one whose worker died is due again after the lease.
        Returns (id, event_id, event_type, payload, attempts, url, secret); url None: no subscription."""
        async with self.transaction() as tx:
            await tx.execute(self.dialect.update_first("webhook_outbox", "claim = %s, next_attempt_at = %s",
                                                       "state = 'pending' AND next_attempt_at <= %s"),
                             (claim, lease_until, now, limit))
            rows = await tx.fetchall(
                "SELECT o.id, o.event_id, o.event_type, o.payload, o.attempts, s.url, s.secret FROM webhook_outbox o"
                " LEFT JOIN webhook_subscriptions s ON s.id = o.subscription_id"
                " WHERE o.claim = %s AND o.state = 'pending' ORDER BY o.id", (claim,))
        return [tuple(r) for r in rows]

    async def finish_deliveries(self, rows: Sequence[tuple]) -> None:
        """rows: (id, claim, state, attempts, next_attempt_at, last_status, last_error, finished_at);
        only rows still held under this claim are changed. A success keeps the last error on record."""
        async with self.transaction() as tx:
            for oid, claim, state, attempts, next_at, status, error, finished in rows:
                await tx.execute(
                    "UPDATE webhook_outbox SET state = %s, attempts = %s, next_attempt_at = %s, last_status = %s,"
                    " last_error = COALESCE(%s, last_error), finished_at = %s, claim = NULL"
                    " WHERE id = %s AND claim = %s",
                    (state, attempts, next_at, status, error, finished, oid, claim))

    async def prune_deliveries(self, before: dt.datetime) -> int:
        async with self.transaction() as tx:
            return await tx.execute("DELETE FROM webhook_outbox WHERE state <> 'pending' AND finished_at < %s",
                                    (before,))

    async def deliveries(self, sid: int, limit: int = 50) -> list[tuple]:
        """The latest outbox rows of a subscription: (id, event_id, event_type, state, attempts,
        last_status, last_error, created_at, finished_at)."""
        async with self.transaction() as tx:
            return [tuple(r) for r in await tx.fetchall(
                "SELECT id, event_id, event_type, state, attempts, last_status, last_error, created_at, finished_at"
                " FROM webhook_outbox WHERE subscription_id = %s ORDER BY id DESC LIMIT %s", (sid, limit))]
