"""Who is this face? Matching against the gallery plus the writes that follow from it.

All gallery-changing work runs under a per-worker asyncio lock AND the database-wide gallery
lock, after replaying changes other workers made (gallery_changes). So twenty concurrent
requests with the same new face create exactly one unknown person, on any number of workers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
import time
import unicodedata
from dataclasses import dataclass

import cv2
import numpy as np

from api import metrics
from api.errors import InvalidField, NoFace, NotFound, TooManyFaces
from api.inference import Analysis, Face
from api.matching import Gallery, Match
from api.repository import Repository, Tx, utcnow
from api.settings import Settings



def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    return slug[:60] or "person"


def new_unknown_id() -> str:
    return f"unknown_{int(time.time())}_{random.randint(0, 9999):04d}"


def encode_crop(chip: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", chip[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return buf.tobytes() if ok else b""


def normalised_mean(vectors: np.ndarray) -> np.ndarray:
    m = vectors.mean(axis=0)
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)


@dataclass
class Identified:
    face: Face
    kind: str
    person_id: str | None  # None: below the quality gate, matched nobody, not remembered
    person_name: str | None
    similarity: float | None


@dataclass
class Registered:
    person_id: str
    created: bool
    samples: int
    promoted_unknown: str | None


class IdentityService:
    def __init__(self, repo: Repository, settings: Settings):
        self.repo, self.settings = repo, settings
        self.gallery = Gallery()
        self.names: dict[str, str] = {}  # known person_id -> name, for responses
        self.seq = 0
        self.lock = asyncio.Lock()
        self.model = ("face_multitask", "unknown")

    async def load(self) -> None:
        ids, kinds, vecs, seq = await self.repo.load_gallery()
        self.gallery.load(ids, kinds, vecs)
        self.seq = seq
        await self._load_names()

    async def refresh_model(self, inference) -> None:
        """Which face_multitask version serves: stored with every embedding, because
        embeddings of different versions are not comparable (see api.maintenance reembed)."""
        status = (await inference.model_status()).get(self.settings.triton.multitask_model, {})
        if status.get("mlflow_version"):
            self.model = (self.settings.triton.multitask_model, status["mlflow_version"])

    async def _load_names(self) -> None:
        async with self.repo.transaction() as tx:
            self.names = dict(await tx.fetchall("SELECT person_id, person_name FROM known_faces"))

    async def _replay(self, tx: Tx) -> None:
        changes, self.seq = await self.repo.changes_since(tx, self.seq)
        for pid, kind, vec in changes:
            if kind is None:
                self.gallery.remove(pid)
                self.names.pop(pid, None)
            else:
                self.gallery.upsert(pid, kind, vec)
                if kind == "known":
                    row = await tx.fetchone("SELECT person_name FROM known_faces WHERE person_id = %s", (pid,))
                    if row:
                        self.names[pid] = row[0]

    async def sync(self) -> None:
        """Pick up what other workers changed (called periodically)."""
        async with self.lock:
            async with self.repo.transaction() as tx:
                await self._replay(tx)

    # -- /analyze ----------------------------------------------------------------------------
    async def identify(self, analysis: Analysis, threshold: float | None = None,
                       remember: list[bool] | None = None) -> list[Identified]:
        """Match every face; one that matches nobody becomes a new unknown person unless
        `remember` says no for it (below the quality gate): then it is returned with no
        person_id and leaves no row."""
        faces = analysis.faces
        if not faces:
            return []
        threshold = self.settings.matching.threshold if threshold is None else threshold
        remember = remember or [True] * len(faces)
        embs = np.stack([f.embedding for f in faces])
        now = utcnow()
        async with self.lock:
            async with self.repo.transaction(locked=True) as tx:
                await self._replay(tx)
                matches = self.gallery.search(embs, threshold)
                new_rows, counts, results, det_rows = [], {}, [], []
                for face, m, keep in zip(faces, matches, remember):
                    if m is None and not keep:
                        results.append(Identified(face, "unknown", None, None, None))
                        continue
                    if m is None:
                        pid = new_unknown_id()
                        while pid in self.gallery or any(r[0] == pid for r in new_rows):
                            pid = new_unknown_id()
                        new_rows.append((pid, face.embedding.tobytes(), encode_crop(face.chip),
                                         *self.model, now))
                        m = Match(pid, "unknown", float("nan"))
                    if m.kind == "unknown":
                        counts[m.person_id] = counts.get(m.person_id, 0) + 1
                    results.append(Identified(face, m.kind, m.person_id, self.names.get(m.person_id),
                                              None if np.isnan(m.similarity) else m.similarity))
                    det_rows.append(self._detection_row(face, m, now))
                await self.repo.insert_unknowns(tx, new_rows)
                await self.repo.bump_unknowns(tx, counts, now)
                await self.repo.insert_detections(tx, det_rows)
                await self.repo.log_change(tx, [r[0] for r in new_rows], now)
                seq_after = (await tx.fetchone("SELECT COALESCE(MAX(seq), 0) FROM gallery_changes"))[0]
            # committed: now the in-memory gallery may learn the new people
            for pid, emb, *_ in new_rows:
                self.gallery.upsert(pid, "unknown", np.frombuffer(emb, np.float32))
            self.seq = max(self.seq, int(seq_after))
        for r in results:
            if r.person_id is None:
                metrics.IDENTITIES.labels("below_quality_gate").inc()
                continue
            metrics.IDENTITIES.labels(r.kind if r.similarity is not None or r.kind == "known" else "new_unknown").inc()
        return results

    @staticmethod
    def _detection_row(face: Face, m: Match, now: dt.datetime) -> tuple:
        x1, y1, x2, y2 = (float(v) for v in face.box)
        male = face.p_male >= 0.5
        return (m.person_id, m.kind, face.score, round(x1), round(y1), round(x2 - x1), round(y2 - y1),
                face.age, "male" if male else "female", face.p_male if male else 1 - face.p_male,
                None if np.isnan(m.similarity) else m.similarity, now)

    # -- /register and naming ----------------------------------------------------------------
    async def register(self, analysis: Analysis, name: str, image: bytes | None,
                       largest_face: bool = False) -> Registered:
        faces = analysis.faces
        if not faces:
            raise NoFace("no face found in the image; send a photo with one clearly visible face")
        if len(faces) > 1 and not largest_face:
            raise TooManyFaces(f"found {len(faces)} faces; send a photo with exactly one face "
                               "or set largest_face=true to register the largest one")
        face = faces[0]  # the pipeline returns the largest face first
        now = utcnow()
        crop = encode_crop(face.chip)
        stored_image = image if self.settings.database.store_original_image else None
        async with self.lock:
            async with self.repo.transaction(locked=True) as tx:
                await self._replay(tx)
                match = self.gallery.search(face.embedding[None], self.settings.matching.threshold)[0]
                existing = await self.repo.known_by_name(tx, name)
                if existing:
                    person_id, created = existing[0], False
                else:
                    person_id, created = await self._new_known_id(tx, name, now), True
                promoted = match.person_id if match and match.kind == "unknown" else None
                template, samples = await self._add_sample(
                    tx, person_id, name, face.embedding, crop, stored_image, now, created,
                    face_age=face.age, face_gender="male" if face.p_male >= 0.5 else "female")
                if promoted:
                    await self.repo.promote_unknown(tx, promoted, person_id)
                await self.repo.log_change(tx, [person_id] + ([promoted] if promoted else []), now)
            self.gallery.upsert(person_id, "known", template)
            self.names[person_id] = name
            if promoted:
                self.gallery.remove(promoted)
        return Registered(person_id, created, samples, promoted)

    async def _new_known_id(self, tx: Tx, name: str, now: dt.datetime) -> str:
        base = f"known_{slugify(name)}_{int(now.replace(tzinfo=dt.timezone.utc).timestamp())}"
        person_id, n = base, 1
        while await self.repo.person_id_taken(tx, person_id):
            n += 1
            person_id = f"{base}_{n}"
        return person_id

    async def _add_sample(self, tx: Tx, person_id: str, name: str, emb: np.ndarray, crop: bytes | None,
                          image: bytes | None, now: dt.datetime, created: bool,
                          face_age: float | None = None, face_gender: str | None = None):
        await self.repo.add_known_sample(tx, person_id, emb.tobytes(), crop, image, self.model, now)
        samples = await self.repo.known_samples(tx, person_id)
        template = normalised_mean(samples)
        if created:
            await self.repo.insert_known(tx, person_id, name, template.tobytes(), crop, image, face_age,
                                         face_gender, self.model, now, sample_count=len(samples))
        else:
            await self.repo.update_known_template(tx, person_id, template.tobytes(), len(samples), now)
        return template, len(samples)

    async def name_person(self, person_id: str, name: str) -> str:
        """PATCH: rename a known person, or name an unknown one (it becomes known)."""
        now = utcnow()
        async with self.lock:
            async with self.repo.transaction(locked=True) as tx:
                await self._replay(tx)
                kind = self.gallery.kind_of(person_id)
                if kind is None:
                    raise NotFound(f"no person {person_id}")
                if kind == "known":
                    await self.repo.rename_known(tx, person_id, name, now)
                    await self.repo.log_change(tx, [person_id], now)
                    target, template = person_id, None
                else:
                    row = await self.repo.unknown_row(tx, person_id)
                    emb = np.frombuffer(row[0], np.float32)
                    existing = await self.repo.known_by_name(tx, name)
                    target = existing[0] if existing else await self._new_known_id(tx, name, now)
                    template, _ = await self._add_sample(tx, target, name, emb, row[1], None, now,
                                                         created=not existing)
                    await self.repo.promote_unknown(tx, person_id, target)
                    await self.repo.log_change(tx, [person_id, target], now)
            self.names[target] = name
            if template is not None:
                self.gallery.remove(person_id)
                self.gallery.upsert(target, "known", template)
        return target

    async def delete_person(self, person_id: str) -> int:
        now = utcnow()
        async with self.lock:
            async with self.repo.transaction(locked=True) as tx:
                n = await self.repo.delete_person(tx, person_id)
                if n == 0:
                    raise NotFound(f"no person {person_id}")
                await self.repo.log_change(tx, [person_id], now)
            self.gallery.remove(person_id)
            self.names.pop(person_id, None)
        return n


def clean_name(raw: str | None) -> str:
    """person_name rules: trimmed, 1-100 characters, Unicode allowed, no control characters."""
    name = unicodedata.normalize("NFC", (raw or "").strip())
    if not name:
        raise InvalidField("person_name must not be empty")
    if len(name) > 100:
        raise InvalidField("person_name must be at most 100 characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in name):
        raise InvalidField("person_name must not contain control characters")
    return name
