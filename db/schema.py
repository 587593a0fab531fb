"""Schema and migrations for MySQL/MariaDB and SQLite from one source.

Each migration is a list of statements with type placeholders that
each dialect fills (db/dialect.py).
Applied in order at start-up, inside ``schema_version`` bookkeeping; safe to run from
several workers at once (MySQL: a named lock; SQLite: an immediate transaction).
"""

from __future__ import annotations

from db.dialect import Dialect

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE known_faces (
            id {pk},
            person_id {id} NOT NULL UNIQUE,
            person_name {name} NOT NULL,
            embedding {blob} NOT NULL,
            sample_count INTEGER NOT NULL DEFAULT 1,
            face_crop {blob},
            image_data {bigblob},
            age FLOAT,
            gender {text},
            model_name {text},
            model_version {text},
            created_at {ts} NOT NULL,
            updated_at {ts} NOT NULL
        ){engine}""",
        "CREATE INDEX ix_known_faces_name ON known_faces (person_name)",
        """CREATE TABLE known_face_samples (
            id {pk},
            person_id {id} NOT NULL,
            embedding {blob} NOT NULL,
            face_crop {blob},
            image_data {bigblob},
            model_name {text},
            model_version {text},
            created_at {ts} NOT NULL
        ){engine}""",
        "CREATE INDEX ix_known_face_samples_person ON known_face_samples (person_id)",
        """CREATE TABLE unknown_faces (
            id {pk},
            person_id {id} NOT NULL UNIQUE,
            embedding {blob} NOT NULL,
            face_crop {blob},
            detection_count INTEGER NOT NULL DEFAULT 1,
            first_seen {ts} NOT NULL,
            last_seen {ts} NOT NULL,
            model_name {text},
            model_version {text},
            created_at {ts} NOT NULL,
            updated_at {ts} NOT NULL
        ){engine}""",
        "CREATE INDEX ix_unknown_faces_last_seen ON unknown_faces (last_seen)",
        """CREATE TABLE face_detections (
            id {pk},
            person_id {id} NOT NULL,
            face_type {text} NOT NULL,
            confidence FLOAT NOT NULL,
            bbox_x INTEGER NOT NULL,
            bbox_y INTEGER NOT NULL,
            bbox_width INTEGER NOT NULL,
            bbox_height INTEGER NOT NULL,
            age FLOAT,
            gender {text},
            gender_confidence FLOAT,
            similarity FLOAT,
            detected_at {ts} NOT NULL
        ){engine}""",
        "CREATE INDEX ix_face_detections_person ON face_detections (person_id)",
        "CREATE INDEX ix_face_detections_detected_at ON face_detections (detected_at)",
        # every gallery change, so that each API worker can replay what the others did
        """CREATE TABLE gallery_changes (
            seq {pk},
            person_id {id} NOT NULL,
            changed_at {ts} NOT NULL
        ){engine}""",
        """CREATE TABLE api_keys (
            id {pk},
            key_hash {id} NOT NULL UNIQUE,
            label {text},
            created_at {ts} NOT NULL
        ){engine}""",
    ]),
    (2, [
        # webhooks: subscriptions, and the outbox written in the transaction of each identity change
        # (one row per event and subscription), emptied by the delivery task of the API workers
        """CREATE TABLE webhook_subscriptions (
            id {pk},
            url {url} NOT NULL,
            secret {text} NOT NULL,
            events {url} NOT NULL,
            description {name},
            created_at {ts} NOT NULL
        ){engine}""",
        """CREATE TABLE webhook_outbox (
            id {pk},
            subscription_id BIGINT NOT NULL,
            event_id {id} NOT NULL,
            event_type {text} NOT NULL,
            payload {longtext} NOT NULL,
            state {text} NOT NULL,
            claim {id},
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at {ts} NOT NULL,
            last_status INTEGER,
            last_error {text},
            created_at {ts} NOT NULL,
            finished_at {ts}
        ){engine}""",
        "CREATE INDEX ix_webhook_outbox_due ON webhook_outbox (state, next_attempt_at)",
        "CREATE INDEX ix_webhook_outbox_claim ON webhook_outbox (claim)",
        "CREATE INDEX ix_webhook_outbox_subscription ON webhook_outbox (subscription_id, state)",
    ]),
]


def statements(dialect: Dialect, version: int) -> list[str]:
    for v, stmts in MIGRATIONS:
        if v == version:
            return [s.format(**dialect.types) for s in stmts]
    raise KeyError(version)


LATEST = MIGRATIONS[-1][0]
