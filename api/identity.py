"""Who is this face? Matching against the gallery plus the writes that follow from it.

Every worker holds the gallery in memory (api.matching) and keeps it equal to the database:
- every gallery-changing write runs under this worker's asyncio lock AND the database-wide
  gallery lock, after replaying the change log (gallery_changes) up to the newest change, and
  logs one row per person it changed;
- after its commit the worker applies its own changes in memory and moves its log position
  past its own rows, so it never replays them (it does replay them if anything else slipped
  in between, which is harmless: a replay sets each changed person to its state in the
  database, and an unchanged vector leaves no tombstone);
- a replay reads everything it needs first, then applies it, then advances the position: a
  database error in the middle leaves the position where it was, so nothing is skipped;
- searches, replays and reloads all hold the same asyncio lock;
- sightings of people already in the gallery (the common /analyze) are written without the
  database-wide lock: each matched person's row is locked instead (Repository.lock_persons),
  and every change that merges, promotes or deletes a person locks that row too, so a sighting
  and a change of the same person are serialised, and a sighting whose person changed since
  the search goes through the locked path after all.
So twenty concurrent requests with the same new face create exactly one unknown person, on
any number of workers, and each worker's gallery holds exactly the templates of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import re
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from api import metrics
from api.errors import (DatabaseUnavailable, EmbeddingVersionMismatch, FaceMatchesOtherPerson, GalleryReembedding, FaceMismatch, InvalidField, LastSample, NameTaken, NoFace,
                        NotFound, TooManyFaces)
from api.inference import Analysis, Face
from api.matching import Gallery, Match
from api.repository import DetectionRow, GalleryEntry, NewUnknown, Repository, Tx, utcnow
from api.webhooks import Event, Webhooks, face_data
from core.settings import Settings

MODES = ("track", "search", "detect")


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


def pick_face(analysis: Analysis, largest_face: bool, what: str = "the image") -> Face:
    """The one face of a photo: 400 when there is none, or several and not largest_face.
    The pipeline returns faces largest first."""
    faces = analysis.faces
    if not faces:
        raise NoFace(f"no face found in {what}; send a photo with one clearly visible face")
    if len(faces) > 1 and not largest_face:
        raise TooManyFaces(f"found {len(faces)} faces in {what}; send a photo with exactly one face "
                           "or set largest_face=true to use the largest one")
    return faces[0]


@dataclass
class Identified:
    face: Face
    kind: str | None  # None in detect mode
    person_id: str | None  # None: no match (search), no matching (detect), below the quality gate (track)
    person_name: str | None
    similarity: float | None
    # candidates=k: the k most similar people before this photo's writes, best first
    candidates: list[tuple[Match, str | None]] | None = None


@dataclass
class Registered:
    person_id: str
    created: bool
    samples: int
    promoted_unknown: str | None
    similarity: float | None = None


@dataclass
class Merged:
    person_id: str  # the survivor
    merged_id: str  # the person that no longer exists
    identity: str


@dataclass
class _Write:
    """What a locked write changed: applied in memory after the commit."""
    tx: Tx
    changes: list[GalleryEntry] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # webhook events, queued in the same transaction

    def put(self, person_id: str, kind: str, vector: np.ndarray, name: str | None, model_version: str | None) -> None:
        self.changes.append(GalleryEntry(person_id, kind, np.asarray(vector, np.float32), name, model_version))

    def gone(self, person_id: str) -> None:
        self.changes.append(GalleryEntry(person_id, None, None, None))


class IdentityService:
    def __init__(self, repo: Repository, settings: Settings):
        self.repo, self.settings = repo, settings
        self.gallery = Gallery()
        self.names: dict[str, str] = {}  # known person_id -> name, for responses
        self.seq = 0  # position in gallery_changes this worker's gallery reflects
        self.rows_applied = 0  # change-log rows taken in since the last load (exactly once each)
        self.lock = asyncio.Lock()
        self.model = ("face_multitask", "unknown")  # served version as polled (for /health)
        self.versions: dict[str, str | None] = {}  # person_id -> face_multitask version of the template
        self.version_count: dict[str | None, int] = {}
        self.webhooks: Webhooks | None = None  # set by the app: events of identity changes

    @property
    def threshold(self) -> float:
        return self.settings.matching.threshold

    async def load(self) -> None:
        """(Re)load the whole gallery; under the lock so no search sees it half-built."""
        async with self.lock:
            entries, seq = await self.repo.load_gallery()
            gallery = Gallery()
            vecs = np.stack([e.vector for e in entries]) if entries else np.zeros((0, 128), np.float32)
            gallery.load([e.person_id for e in entries], [e.kind for e in entries], vecs)
            self.gallery, self.seq, self.rows_applied = gallery, seq, 0
            self.names = {e.person_id: e.name for e in entries if e.kind == "known"}
            self.versions, self.version_count = {}, {}
            for e in entries:
                self._count_version(e.person_id, e.model_version)

    def _count_version(self, person_id: str, version: str | None, gone: bool = False) -> None:
        old = self.versions.pop(person_id, ...)
        if old is not ...:
            self.version_count[old] -= 1
            if not self.version_count[old]:
                del self.version_count[old]
        if not gone:
            self.versions[person_id] = version
            self.version_count[version] = self.version_count.get(version, 0) + 1

    @property
    def gallery_version(self) -> str | None:
        """The face_multitask version every template of the gallery is in; None: empty gallery.
        GalleryReembedding when they are not all in one version (rows older than this guard,
        or a reembed that could not re-embed everything)."""
        if len(self.version_count) > 1 or None in self.version_count:
            raise GalleryReembedding(
                "the gallery holds embeddings of several face_multitask versions "
                f"({', '.join(sorted(str(v) for v in self.version_count))}); identity resumes once the "
                "reembed job has re-embedded them with one version")
        return next(iter(self.version_count), None)

    def _check_version(self, analysis: Analysis) -> None:
        """Embeddings of two face_multitask versions are never compared. Caller holds self.lock
        (just replayed); an empty gallery takes whichever version comes first."""
        wanted = self.gallery_version
        if analysis.model_version is None or wanted is not None and analysis.model_version != wanted:
            raise EmbeddingVersionMismatch(
                f"the photo was embedded by face_multitask v{analysis.model_version} but the gallery is in "
                f"v{wanted}; retry (the service asks for the gallery's version)")

    async def refresh_model(self, inference) -> None:
        """Which face_multitask version serves: stored with every embedding, because
        embeddings of different versions are not comparable (see api.maintenance reembed)."""
        status = (await inference.model_status()).get(self.settings.triton.multitask_model, {})
        if status.get("mlflow_version"):
            self.model = (self.settings.triton.multitask_model, status["mlflow_version"])

    def _apply(self, changes: list[GalleryEntry]) -> None:
        for c in changes:
            self._count_version(c.person_id, c.model_version, gone=c.kind is None)
            if c.kind is None:
                self.gallery.remove(c.person_id)
                self.names.pop(c.person_id, None)
            else:
                self.gallery.upsert(c.person_id, c.kind, c.vector)
                if c.kind == "known":
                    self.names[c.person_id] = c.name
                else:
                    self.names.pop(c.person_id, None)

    async def _replay(self, tx: Tx) -> None:
        """Apply what others changed since our position. Caller holds self.lock."""
        changes, seq, rows = await self.repo.changes_since(tx, self.seq)  # every read happens here
        self._apply(changes)
        self.seq, self.rows_applied = seq, self.rows_applied + rows  # only once applied

    async def in_gallery_version(self, work):
        """Run `work(version)`: inference that asks face_multitask for the gallery's version, then
        the identity step, which refuses embeddings of another version. If the gallery moved to
        another version meanwhile (a reembed committed, perhaps not replayed here yet), once more
        in the new one; otherwise a version that is not served, or a gallery not in one version,
        is 503 gallery_reembedding (api.errors) until the reembed job has run."""
        version = self.gallery_version
        try:
            return await work(version)
        except GalleryReembedding:
            await self.sync()
            if self.gallery_version == version:
                raise
            return await work(self.gallery_version)

    async def sync(self) -> None:
        """Pick up what other workers changed (called periodically)."""
        async with self.lock:
            async with self.repo.transaction() as tx:
                await self._replay(tx)

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[_Write]:
        """A gallery-changing transaction: both locks, replayed first; the changes recorded
        on the _Write are logged in the same transaction and applied here after the commit."""
        async with self.lock:
            async with self.repo.transaction(locked=True) as tx:
                await self._replay(tx)
                w = _Write(tx)
                yield w
                own, last = [], self.seq
                if w.changes:
                    own = await self.repo.log_change(tx, [c.person_id for c in w.changes], utcnow())
                    # under the database-wide lock nobody else logs: the rows after our position are ours
                    if await self.repo.changes_after(tx, self.seq) == len(own):
                        last = max(own)
                queued = await self.webhooks.queue(tx, w.events) if w.events and self.webhooks else 0
            if queued:
                self.webhooks.queued.set()
            self._apply(w.changes)
            if last != self.seq:
                self.seq, self.rows_applied = last, self.rows_applied + len(own)

    # -- /analyze ----------------------------------------------------------------------------
    def _top(self, embs: np.ndarray, k: int) -> list[list[tuple[Match, str | None]]] | None:
        """candidates=k: (match, name) of the k nearest people per face. Caller holds self.lock."""
        if not k:
            return None
        return [[(m, self.names.get(m.person_id)) for m in ms] for ms in self.gallery.top(embs, k)]

    async def identify(self, analysis: Analysis, mode: str = "track", threshold: float | None = None,
                       remember: list[bool] | None = None, candidates: int = 0) -> list[Identified]:
        """Match every face (mode track/search; detect: no matching). In track mode a face that
        matches nobody becomes a new unknown person unless `remember` says no for it (below
        the quality gate): then it is returned with no person_id and leaves no row.
        `candidates`: also the k nearest people per face, from the gallery as it was before
        this photo's writes.

        The database-wide lock is taken only when a new unknown must be created: a photo whose
        faces all match someone (the common case) is matched against the replayed gallery and
        its sightings written without it, each matched person's row locked instead (see
        _sightings). Only the locked path creates people, after replaying and matching again
        under the lock, so one face still makes exactly one unknown across workers and pods."""
        faces = analysis.faces
        if not faces or mode == "detect":
            return [Identified(f, None, None, None, None) for f in faces]
        threshold = self.threshold if threshold is None else threshold
        remember = remember or [True] * len(faces)
        embs = np.stack([f.embedding for f in faces])
        if mode == "search":
            return await self._search_only(analysis, embs, threshold, candidates)
        matches, tops = await self._search_replayed(analysis, embs, threshold, candidates)
        results = None
        if all(m is not None or not keep for m, keep in zip(matches, remember)):
            with contextlib.suppress(DatabaseUnavailable):  # e.g. an InnoDB deadlock victim: take the lock
                results = await self._sightings(faces, matches)
        if results is None:
            results, tops = await self._identify_locked(analysis, remember, threshold, candidates)
        for r, top in zip(results, tops or ()):
            r.candidates = top
        for r in results:
            if r.person_id is None:
                metrics.IDENTITIES.labels("below_quality_gate").inc()
                continue
            metrics.IDENTITIES.labels(r.kind if r.similarity is not None or r.kind == "known" else "new_unknown").inc()
        return results

    async def _search_replayed(self, analysis: Analysis, embs: np.ndarray, threshold: float, candidates: int):
        """Matches (and candidates) against the gallery brought up to date with the change log."""
        async with self.lock:
            async with self.repo.transaction() as tx:
                await self._replay(tx)
            self._check_version(analysis)
            return self.gallery.search(embs, threshold), self._top(embs, candidates)

    async def _sightings(self, faces: list[Face], matches: list[Match | None]) -> list[Identified] | None:
        """Write the sightings of faces that all matched someone, without the gallery lock.
        Each matched person's row is locked first; a person merged, promoted or deleted since
        our search (the row is gone or changed kind) sends the request to the locked path, and
        a change that comes after waits for our commit and then carries our rows along."""
        now = utcnow()
        ids = [m.person_id for m in matches if m is not None]
        async with self.repo.transaction(write=True) as tx:
            current = await self.repo.lock_persons(tx, ids)
            if any(current.get(m.person_id, (None,))[0] != m.kind for m in matches if m is not None):
                return None  # nothing written; the locked path decides again
            counts: dict[str, int] = {}
            for m in matches:
                if m is not None and m.kind == "unknown":
                    counts[m.person_id] = counts.get(m.person_id, 0) + 1
            await self.repo.bump_unknowns(tx, counts, now)
            await self.repo.insert_detections(
                tx, [self._detection_row(f, m, now) for f, m in zip(faces, matches) if m is not None])
            results = [Identified(f, m.kind, m.person_id, current[m.person_id][1], m.similarity) if m else
                       Identified(f, "unknown", None, None, None) for f, m in zip(faces, matches)]
            queued = 0
            if self.webhooks:  # in this transaction, as on the locked path (rows locked: counts exact)
                w = _Write(tx)
                await self._sighting_events(w, results, set(), counts)
                queued = await self.webhooks.queue(tx, w.events) if w.events else 0
        if queued:
            self.webhooks.queued.set()
        return results

    async def _identify_locked(self, analysis: Analysis, remember: list[bool], threshold: float,
                               candidates: int):
        """Under the gallery lock: replay, check the version again, match again, create the new unknowns."""
        now, faces = utcnow(), analysis.faces
        model = (self.settings.triton.multitask_model, analysis.model_version)
        async with self._writing() as w:
            self._check_version(analysis)
            embs = np.stack([f.embedding for f in faces])
            matches = self.gallery.search(embs, threshold)
            tops = self._top(embs, candidates)
            await self.repo.lock_persons(w.tx, [m.person_id for m in matches if m is not None])
            new_rows, new_vecs, counts, results, det_rows = [], [], {}, [], []
            for face, m, keep in zip(faces, matches, remember):
                if m is None and new_vecs:
                    # the same new face twice in one photo (a mirror, a poster): one person
                    sims = np.stack(new_vecs) @ face.embedding
                    j = int(np.argmax(sims))
                    if sims[j] >= self.settings.matching.same_image_threshold:
                        m = Match(new_rows[j].person_id, "unknown", float(sims[j]))
                if m is None and not keep:
                    results.append(Identified(face, "unknown", None, None, None))
                    continue
                if m is None:
                    pid = new_unknown_id()
                    while pid in self.gallery or any(r.person_id == pid for r in new_rows):
                        pid = new_unknown_id()
                    new_rows.append(NewUnknown(pid, face.embedding.tobytes(), encode_crop(face.chip), *model, now))
                    new_vecs.append(face.embedding)
                    m = Match(pid, "unknown", similarity=None)  # a new person: nobody matched
                if m.kind == "unknown":
                    counts[m.person_id] = counts.get(m.person_id, 0) + 1
                results.append(Identified(face, m.kind, m.person_id, self.names.get(m.person_id), m.similarity))
                det_rows.append(self._detection_row(face, m, now))
            await self.repo.insert_unknowns(w.tx, new_rows)
            await self.repo.bump_unknowns(w.tx, counts, now)
            await self.repo.insert_detections(w.tx, det_rows)
            if self.webhooks:
                await self._sighting_events(w, results, {r.person_id for r in new_rows}, counts)
            for row, vec in zip(new_rows, new_vecs):
                w.put(row.person_id, "unknown", vec, None, analysis.model_version)
        return results, tops

    async def _sighting_events(self, w: _Write, results: list[Identified], created: set[str],
                               counts: dict[str, int]) -> None:
        """person.known_seen per known face, person.unknown_created per new unknown person, and
        person.unknown_seen when an unknown person's count reaches a multiple of N. Only the types
        someone subscribed to are built (the default /analyze path does nothing here)."""
        hooks, every = self.webhooks, self.settings.webhooks.unknown_seen_every
        seen_counts = {}
        if hooks.wants("person.unknown_seen") and counts:
            seen_counts = await self.repo.unknown_counts(w.tx, [p for p in counts if p not in created])
        announced = set()
        for r in results:
            if r.person_id is None:
                continue
            data = {"person_id": r.person_id}
            if r.kind == "known" and hooks.wants("person.known_seen"):
                w.events.append(Event("person.known_seen", {**data, "person_name": r.person_name,
                                                            "similarity": round(r.similarity, 4), "face": face_data(r.face)}))
            elif r.person_id in created and r.person_id not in announced and hooks.wants("person.unknown_created"):
                announced.add(r.person_id)
                w.events.append(Event("person.unknown_created", {**data, "face": face_data(r.face)}))
            elif r.person_id in seen_counts and r.person_id not in announced:
                n, added = seen_counts[r.person_id], counts[r.person_id]
                if n // every > (n - added) // every:  # the count passed a multiple of N
                    announced.add(r.person_id)
                    w.events.append(Event("person.unknown_seen", {
                        **data, "detection_count": n, "similarity": None if r.similarity is None else
                        round(r.similarity, 4), "face": face_data(r.face)}))

    async def _search_only(self, analysis: Analysis, embs: np.ndarray, threshold: float,
                           candidates: int = 0) -> list[Identified]:
        """mode=search: up to date with the change log, then a search; nothing is written."""
        faces = analysis.faces
        async with self.lock:
            async with self.repo.transaction() as tx:
                await self._replay(tx)
            self._check_version(analysis)
            matches = self.gallery.search(embs, threshold)
            names = {m.person_id: self.names.get(m.person_id) for m in matches if m}
            tops = self._top(embs, candidates) or [None] * len(faces)
        return [Identified(f, m.kind, m.person_id, names[m.person_id], m.similarity, top) if m else
                Identified(f, "unknown", None, None, None, top) for f, m, top in zip(faces, matches, tops)]

    @staticmethod
    def _detection_row(face: Face, m: Match, now: dt.datetime) -> DetectionRow:
        return DetectionRow(m.person_id, m.kind, face.score, *face.xywh, face.age, face.gender,
                            face.gender_confidence, m.similarity, now)

    # -- /register and naming ----------------------------------------------------------------
    async def register(self, analysis: Analysis, name: str, image: bytes | None,
                       largest_face: bool = False, force: bool = False) -> Registered:
        """The enrolment rule: a new name creates a person unless the face already is another
        known person; an existing name gets the sample only if the face matches that person's
        template. Both at the matching threshold; force=true overrides either check."""
        face = pick_face(analysis, largest_face)
        now = utcnow()
        crop = encode_crop(face.chip)
        stored_image = image if self.settings.database.store_original_image else None
        model = (self.settings.triton.multitask_model, analysis.model_version)
        async with self._writing() as w:
            tx = w.tx
            self._check_version(analysis)
            match = self.gallery.search(face.embedding[None], self.threshold)[0]
            existing = await self.repo.known_by_name(tx, name)
            similarity = None
            if existing:
                person_id, created = existing[0], False
                similarity = float(np.frombuffer(existing[1], np.float32) @ face.embedding)
                if similarity < self.threshold and not force:
                    raise FaceMismatch(
                        f"the face does not match {name}'s template (similarity {similarity:.3f} < "
                        f"{self.threshold}); send a photo of {name}, register it under another name, "
                        "or pass force=true to add it to this person anyway")
            else:
                if match is not None and match.kind == "known" and not force:
                    raise FaceMatchesOtherPerson(
                        f"this face is already known as person {match.person_id} (similarity "
                        f"{match.similarity:.3f}); register it under that person's name, or pass "
                        "force=true to create a separate person")
                person_id, created = await self._new_known_id(tx, name, now), True
            promoted = match.person_id if match and match.kind == "unknown" else None
            if promoted:
                await self.repo.lock_persons(tx, [promoted])
            template, samples = await self._add_sample(
                tx, person_id, name, face.embedding, crop, stored_image, now, created,
                face_age=face.age, face_gender=face.gender, model=model)
            if promoted:
                await self.repo.promote_unknown(tx, promoted, person_id)
                w.gone(promoted)
                w.events.append(_merged_event(person_id, promoted, "known", "register"))
            w.put(person_id, "known", template, name, analysis.model_version)
        return Registered(person_id, created, samples, promoted, similarity)

    async def _new_known_id(self, tx: Tx, name: str, now: dt.datetime) -> str:
        base = f"known_{slugify(name)}_{int(now.replace(tzinfo=dt.timezone.utc).timestamp())}"
        person_id, n = base, 1
        while await self.repo.person_id_taken(tx, person_id):
            n += 1
            person_id = f"{base}_{n}"
        return person_id

    async def _add_sample(self, tx: Tx, person_id: str, name: str, emb: np.ndarray, crop: bytes | None,
                          image: bytes | None, now: dt.datetime, created: bool,
                          face_age: float | None = None, face_gender: str | None = None,
                          model: tuple[str, str | None] = ("face_multitask", None)):
        await self.repo.add_known_sample(tx, person_id=person_id, embedding=emb.tobytes(), crop=crop, image=image,
                                         model=model, now=now)
        template, count = await self._retemplate(tx, person_id, now) if not created else (emb, 1)
        if created:
            await self.repo.insert_known(tx, person_id=person_id, name=name, embedding=template.tobytes(), crop=crop,
                                         image=image, age=face_age, gender=face_gender, model=model, now=now)
        return template, count

    async def _retemplate(self, tx: Tx, person_id: str, now: dt.datetime) -> tuple[np.ndarray, int]:
        """A known person's template: the normalised mean of their samples."""
        samples = await self.repo.known_samples(tx, person_id)
        template = normalised_mean(samples)
        await self.repo.update_known_template(tx, person_id, template.tobytes(), len(samples), now)
        return template, len(samples)

    async def _kind(self, tx: Tx, person_id: str) -> str:
        """known/unknown, the person's row locked until the commit (api.repository.lock_persons)."""
        found = (await self.repo.lock_persons(tx, [person_id])).get(person_id)
        if found is None:
            raise NotFound(f"no person {person_id}")
        return found[0]

    async def _name_free(self, tx: Tx, name: str, person_id: str) -> None:
        owner = await self.repo.known_by_name(tx, name)
        if owner and owner[0] != person_id:
            raise NameTaken(f"{name} is already the name of {owner[0]}; to make them one person, "
                            f"POST /persons/{person_id}/merge with {{\"into\": \"{owner[0]}\"}}")

    async def name_person(self, person_id: str, name: str) -> str:
        """PATCH: rename a known person, or name an unknown one (it becomes known). A name
        another known person has is refused (409): joining two people is an explicit merge."""
        now = utcnow()
        async with self._writing() as w:
            tx = w.tx
            kind = await self._kind(tx, person_id)
            await self._name_free(tx, name, person_id)
            if kind == "known":
                await self.repo.rename_known(tx, person_id, name, now)
                w.put(person_id, "known", np.frombuffer((await self.repo.known_row(tx, person_id))[1], np.float32),
                      name, self.versions.get(person_id))
                return person_id
            row = await self.repo.unknown_row(tx, person_id)
            emb = np.frombuffer(row[0], np.float32)
            target = await self._new_known_id(tx, name, now)
            template, _ = await self._add_sample(tx, target, name, emb, row[1], None, now, created=True,
                                                 model=(row[5], row[6]))
            await self.repo.promote_unknown(tx, person_id, target)
            w.gone(person_id)
            w.put(target, "known", template, name, row[6])
            w.events.append(_merged_event(target, person_id, "known", "named"))
        return target

    async def merge(self, person_id: str, into: str) -> Merged:
        """Make two people one: samples, sightings and counts move. When one side is known the
        known person survives (a name is never dropped); otherwise `into` does."""
        if person_id == into:
            raise InvalidField("a person cannot be merged into itself")
        now = utcnow()
        async with self._writing() as w:
            tx = w.tx
            await self.repo.lock_persons(tx, [person_id, into])  # both rows, in id order
            kinds = {p: await self._kind(tx, p) for p in (person_id, into)}
            source, target = person_id, into
            if kinds[source] == "known" and kinds[target] == "unknown":
                source, target = target, source
            if kinds[target] == "known":
                name, *_ = await self.repo.known_row(tx, target)
                if kinds[source] == "known":
                    await self.repo.absorb_known(tx, source, target)
                else:
                    row = await self.repo.unknown_row(tx, source)
                    await self.repo.add_known_sample(tx, person_id=target, embedding=bytes(row[0]), crop=row[1],
                                                     image=None, model=(row[5], row[6]), now=now)
                    await self.repo.promote_unknown(tx, source, target)
                template, _ = await self._retemplate(tx, target, now)
                w.put(target, "known", template, name, self.versions.get(target))
            else:
                src, dst = await self.repo.unknown_row(tx, source), await self.repo.unknown_row(tx, target)
                template = normalised_mean(np.stack([np.frombuffer(dst[0], np.float32),
                                                     np.frombuffer(src[0], np.float32)]))
                await self.repo.absorb_unknown(tx, from_id=source, into_id=target, embedding=template.tobytes(),
                                               first_seen=min(src[3], dst[3]), last_seen=max(src[4], dst[4]),
                                               count=int(src[2]), now=now)
                w.put(target, "unknown", template, None, self.versions.get(target))
            w.gone(source)
            w.events.append(_merged_event(target, source, kinds[target], "merge"))
        return Merged(target, source, kinds[target])

    async def delete_sample(self, person_id: str, sample_id: int) -> int:
        """Remove one sample of a known person; the template is recomputed from the rest."""
        now = utcnow()
        async with self._writing() as w:
            tx = w.tx
            kind = await self._kind(tx, person_id)
            ids = await self.repo.sample_ids(tx, person_id) if kind == "known" else [0]
            if sample_id not in ids:
                raise NotFound(f"{person_id} has no sample {sample_id}")
            if len(ids) == 1:
                raise LastSample(f"sample {sample_id} is the only sample of {person_id}; "
                                 f"DELETE /persons/{person_id} erases the person")
            await self.repo.delete_sample(tx, person_id, sample_id)
            template, count = await self._retemplate(tx, person_id, now)
            w.put(person_id, "known", template, (await self.repo.known_row(tx, person_id))[0], self.versions.get(person_id))
        return count

    async def delete_person(self, person_id: str) -> int:
        async with self._writing() as w:
            await self.repo.lock_persons(w.tx, [person_id])
            n = await self.repo.delete_person(w.tx, person_id)
            if n == 0:
                raise NotFound(f"no person {person_id}")
            w.gone(person_id)
            w.events.append(Event("person.deleted", {"person_id": person_id, "reason": "deleted"}))
        return n

    # -- /verify -----------------------------------------------------------------------------
    async def template_of(self, person_id: str, analysis: Analysis) -> tuple[str, str | None, np.ndarray]:
        """A person's template, to compare with a face of `analysis`: only within one version."""
        found = await self.repo.template(person_id)
        if found is None:
            raise NotFound(f"no person {person_id}")
        kind, name, template, version = found
        if version != analysis.model_version:
            raise EmbeddingVersionMismatch(
                f"{person_id}'s template is in face_multitask v{version}, the photo was embedded by "
                f"v{analysis.model_version}; retry once the reembed job has run")
        return kind, name, template


def _merged_event(survivor: str, merged: str, identity: str, reason: str) -> Event:
    """person.merged: `merged_id` no longer exists, its history is `person_id`'s. Reasons: merge
    (POST /persons/{id}/merge), register (a registered face was that unknown person), named
    (PATCH gave an unknown person a name: it is known now, under a new id)."""
    return Event("person.merged", {"person_id": survivor, "merged_id": merged, "identity": identity, "reason": reason})


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
