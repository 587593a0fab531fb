"""Gallery export and import: every person with their samples, embeddings (and the model version
that made them) and aligned face crops in one portable file, for backups and for moving a
gallery between sites (`python -m api.maintenance export-gallery | import-gallery`).

The file is an uncompressed tar (the crops are JPEG already):
    manifest.json    format name and version, export time, counts, embedding models used
    people.json      one entry per person: id, kind, name, attributes, timestamps, samples;
                     each sample names its row of embeddings.npy, its crop file and its model
    embeddings.npy   float32 (n, 128), one row per sample (an unknown person has one)
    crops/<n>.jpg    the aligned 144x144 face canvas of each sample

Embeddings of two face_multitask versions are not comparable, so an import refuses embeddings
made by another version than the one this site serves, unless asked to re-embed: then they are
recomputed from their crops through Triton (the crop is exactly the model's input). Person ids
are kept, so a client that knew a person at the old site finds them under the same id; a person
whose id already exists here, or a known person whose name another person here has, is skipped
and reported (nothing is overwritten). The import is one transaction under the gallery lock and
is logged in gallery_changes, so running API workers take the people in within a second.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from api.repository import Repository, utcnow
from core.settings import Settings

FORMAT, VERSION = "face-analytics-gallery", 1
DIM = 128


class TransferError(Exception):
    """The file cannot be imported as asked; nothing was written."""


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    skipped_name_taken: list[str] = field(default_factory=list)
    reembedded: int = 0


def _ts(v) -> str | None:
    if v is None:
        return None
    return v.isoformat(sep=" ") if isinstance(v, dt.datetime) else str(v)


def _parse_ts(v) -> dt.datetime:
    return dt.datetime.fromisoformat(v).replace(tzinfo=None) if v else utcnow()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(utcnow().timestamp()), 0o600
    tar.addfile(info, io.BytesIO(data))


async def export_gallery(settings: Settings, path: Path) -> dict:
    """Write the whole gallery to `path` (written beside it, then renamed); returns the manifest."""
    repo = Repository(settings)
    await repo.start()
    try:
        async with repo.transaction() as tx:  # one snapshot
            known, samples, unknown = await repo.export_rows(tx)
    finally:
        await repo.close()
    people, vectors, crops, models = [], [], [], {}

    def sample(emb, crop, model_name, model_version, created_at) -> dict:
        row = len(vectors)
        vectors.append(np.frombuffer(emb, np.float32))
        name = None
        if crop:
            name = f"crops/{row:07d}.jpg"
            crops.append((name, bytes(crop)))
        key = f"{model_name}:{model_version}"
        models[key] = models.get(key, 0) + 1
        return {"embedding_row": row, "crop": name, "model_name": model_name, "model_version": model_version,
                "created_at": _ts(created_at)}

    by_person: dict[str, list[dict]] = {}
    for pid, emb, crop, mname, mver, created in samples:
        by_person.setdefault(pid, []).append(sample(emb, crop, mname, mver, created))
    for pid, name, age, gender, created, updated in known:
        people.append({"person_id": pid, "kind": "known", "person_name": name, "age": age, "gender": gender,
                       "created_at": _ts(created), "updated_at": _ts(updated), "samples": by_person.get(pid, [])})
    for pid, emb, crop, mname, mver, count, first, last, created in unknown:
        people.append({"person_id": pid, "kind": "unknown", "detection_count": int(count),
                       "first_seen": _ts(first), "last_seen": _ts(last), "created_at": _ts(created),
                       "samples": [sample(emb, crop, mname, mver, first)]})
    manifest = {"format": FORMAT, "version": VERSION, "exported_at": _ts(utcnow()), "embedding_dim": DIM,
                "known_people": len(known), "unknown_people": len(unknown), "samples": len(vectors),
                "crops": len(crops), "embedding_models": models}
    buf = io.BytesIO()
    np.save(buf, np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, DIM), np.float32))
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with tarfile.open(tmp, "w") as tar:
        _add(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
        _add(tar, "people.json", json.dumps(people, ensure_ascii=False).encode())
        _add(tar, "embeddings.npy", buf.getvalue())
        for name, data in crops:
            _add(tar, name, data)
    tmp.replace(path)
    return manifest


def read_file(path: Path) -> tuple[dict, list[dict], np.ndarray, dict[str, bytes]]:
    """(manifest, people, embeddings, crops) of an export, checked; members are read, never extracted."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                if name not in members:
                    raise TransferError(f"{path}: {name} is missing; not a gallery export")
                return tar.extractfile(members[name]).read()

            manifest = json.loads(read("manifest.json"))
            if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
                raise TransferError(f"{path}: not a {FORMAT} file of version {VERSION}")
            people = json.loads(read("people.json"))
            vectors = np.load(io.BytesIO(read("embeddings.npy")), allow_pickle=False)
            crops = {n: tar.extractfile(m).read() for n, m in members.items() if n.startswith("crops/")}
    except (tarfile.TarError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise TransferError(f"{path}: cannot read it ({type(exc).__name__})") from None
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != DIM:
        raise TransferError(f"{path}: embeddings.npy is not float32 (n, {DIM})")
    for p in people:
        for sample in p["samples"]:
            if not 0 <= sample["embedding_row"] < len(vectors) or (sample["crop"] and sample["crop"] not in crops):
                raise TransferError(f"{path}: {p['person_id']} refers to a missing embedding or crop")
    return manifest, people, vectors, crops


async def served_model(settings: Settings) -> tuple[str, str]:
    """(name, MLflow version) of the face_multitask this site's Triton serves."""
    from api.errors import InferenceUnavailable
    from api.inference import InferenceClient

    client = InferenceClient(settings.triton)
    try:
        status = (await client.model_status()).get(settings.triton.multitask_model, {})
    except InferenceUnavailable:
        status = {}
    finally:
        await client.close()
    if not status.get("ready") or not status.get("mlflow_version"):
        raise TransferError("cannot tell which face_multitask version this site serves: start Triton, "
                            "or pass --model-version")
    return settings.triton.multitask_model, str(status["mlflow_version"])


async def _reembed(settings: Settings, chips: list[bytes], version: str, chunk: int = 32) -> np.ndarray:
    import cv2

    from api.inference import InferenceClient

    client, out = InferenceClient(settings.triton), []
    try:
        for start in range(0, len(chips), chunk):
            part = np.stack([cv2.imdecode(np.frombuffer(c, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
                             for c in chips[start:start + chunk]])
            out.append((await client.embed_chips(part, version)).astype(np.float32))
    finally:
        await client.close()
    return np.concatenate(out) if out else np.zeros((0, DIM), np.float32)


async def import_gallery(settings: Settings, path: Path, reembed: bool = False,
                         model: tuple[str, str] | None = None, progress=print) -> ImportReport:
    """Add the people of an export to this site's gallery. `model`: the (name, version) this site
    serves when Triton is not reachable (default: ask Triton); re-embedding always asks Triton."""
    from api.identity import normalised_mean

    _, people, vectors, crops = read_file(path)
    vectors = vectors.copy()
    model = await served_model(settings) if model is None or reembed else model
    samples = [sample for p in people for sample in p["samples"]]
    stale = [sample for sample in samples if (sample["model_name"], str(sample["model_version"])) != model]
    if stale and not reembed:
        found = sorted({f"{sample['model_name']} v{sample['model_version']}" for sample in stale})
        raise TransferError(f"{len(stale)} of {len(samples)} embeddings were made by {', '.join(found)}, this "
                            f"site serves {model[0]} v{model[1]}: embeddings of different versions are not "
                            "comparable. Pass --reembed to recompute them from their crops through Triton.")
    report = ImportReport()
    if stale:
        missing = [sample for sample in stale if not sample["crop"]]
        if missing:
            raise TransferError(f"{len(missing)} embeddings of another model version have no crop to re-embed")
        progress(f"re-embedding {len(stale)} faces with {model[0]} v{model[1]}")
        fresh = await _reembed(settings, [crops[sample["crop"]] for sample in stale], model[1])
        for sample, emb in zip(stale, fresh):
            vectors[sample["embedding_row"]] = emb
            sample["model_name"], sample["model_version"] = model
        report.reembedded = len(stale)

    repo, now = Repository(settings), utcnow()
    await repo.start()
    try:
        async with repo.transaction(locked=True) as tx:
            for p in people:
                pid = p["person_id"]
                if await repo.person_id_taken(tx, pid):
                    report.skipped_existing.append(pid)
                    continue
                first = p["samples"][0] if p["samples"] else None
                if first is None:
                    continue
                crop = crops.get(first["crop"]) if first["crop"] else None
                if p["kind"] == "unknown":
                    await repo.import_unknown(
                        tx, person_id=pid, embedding=vectors[first["embedding_row"]].tobytes(), crop=crop,
                        model=(first["model_name"], str(first["model_version"])),
                        detection_count=p.get("detection_count", 1), first_seen=_parse_ts(p.get("first_seen")),
                        last_seen=_parse_ts(p.get("last_seen")), created_at=_parse_ts(p.get("created_at")), now=now)
                else:
                    owner = await repo.known_by_name(tx, p["person_name"])
                    if owner:
                        report.skipped_name_taken.append(pid)
                        continue
                    template = normalised_mean(np.stack([vectors[x["embedding_row"]] for x in p["samples"]]))
                    for sample in p["samples"]:
                        await repo.add_known_sample(
                            tx, person_id=pid, embedding=vectors[sample["embedding_row"]].tobytes(),
                            crop=crops.get(sample["crop"]) if sample["crop"] else None, image=None,
                            model=(sample["model_name"], str(sample["model_version"])),
                            now=_parse_ts(sample["created_at"]))
                    await repo.insert_known(
                        tx, person_id=pid, name=p["person_name"], embedding=template.tobytes(), crop=crop, image=None,
                        age=p.get("age"), gender=p.get("gender"),
                        model=(first["model_name"], str(first["model_version"])),
                        now=_parse_ts(p.get("created_at")), sample_count=len(p["samples"]))
                report.imported.append(pid)
            await repo.log_change(tx, report.imported, now)  # running workers replay these
    finally:
        await repo.close()
    return report
