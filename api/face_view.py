"""A detected face as /analyze returns it: the contract's fields, the quality gate's mark, and
the extras a request asks for with include=."""

from __future__ import annotations

import base64

from api.identity import Identified, encode_crop
from api.routes.common import bbox
from api.schemas import Candidate, FaceOut, FaceQuality
from pipeline.quality import Quality, assess


def quality(face) -> Quality:
    return assess(face.chip, face.landmarks, face.box, face.score)


def quality_out(q: Quality, gate: float) -> FaceQuality:
    passed = q.overall >= gate
    return FaceQuality(overall=round(q.overall, 4), passed=passed, reason=None if passed else q.weakest,
                       sharpness=round(q.sharpness, 1), yaw=round(q.yaw, 1), pitch=round(q.pitch, 1),
                       roll=round(q.roll, 1), face_size=q.face_size, detection_score=round(q.detection_score, 4),
                       scores={k: round(v, 4) for k, v in q.scores.items()})


def face_out(r: Identified, q: Quality, gate: float, include: frozenset[str]) -> FaceOut:
    f = r.face
    below = q.overall < gate
    return FaceOut(
        bbox=bbox(f),
        confidence=round(f.score, 4), age=round(f.age, 1), gender=f.gender,
        gender_confidence=round(f.gender_confidence, 4),
        identity=r.kind, person_id=r.person_id, person_name=r.person_name,
        similarity=None if r.similarity is None else round(r.similarity, 4),
        landmarks=[[round(float(x), 1), round(float(y), 1)] for x, y in f.landmarks.reshape(5, 2)]
        if "landmarks" in include else None,
        embedding=[round(float(v), 6) for v in f.embedding] if "embedding" in include else None,
        crop=base64.b64encode(encode_crop(f.chip)).decode() if "crop" in include else None,
        quality=quality_out(q, gate) if "quality" in include or below else None,
        candidates=None if r.candidates is None else [
            Candidate(person_id=m.person_id, identity=m.kind, person_name=name, similarity=round(m.similarity, 4))
            for m, name in r.candidates])
