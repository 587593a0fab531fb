"""Per-request options of /analyze: what to include per face and settings within server limits.

The limits are settings (FA_LIMITS_*), so the bounds are checked here rather than in the
Query declarations; a value outside them is a 422 like any other invalid field.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Query

from api.deps import SettingsDep
from api.errors import InvalidField
from core.settings import Settings

INCLUDABLE = ("landmarks", "embedding", "crop", "quality")

INCLUDE_HELP = ("Comma list of extras per face: `landmarks` (5 points [x, y] in original pixels: eye L, "
                "eye R, nose, mouth L, mouth R), `embedding` (128 floats, L2-normalised), `crop` (the "
                "aligned face canvas as base64 JPEG), `quality` (sharpness, yaw/pitch/roll, face size, "
                "detection score, overall score). Without it the response is exactly the contract's.")

CANDIDATES_HELP = ("The k best gallery matches per face (1..FA_LIMITS_CANDIDATES_MAX, 10 by default), best "
                   "first, each with person_id, identity, person_name and similarity, whether or not it reaches "
                   "the matching threshold; taken from the gallery as it was before this photo's own writes. "
                   "mode=track and mode=search only (422 with mode=detect). Adds `candidates` to each face.")

SMALL_FACES_HELP = ("true (the server's FA_DETECT_SMALL_FACES, true by default): faces down to 24 px are found "
                    "anywhere in the photo, with a second, full-resolution detection on large photos whose "
                    "faces are small (group photos). false: one detection over the photo scaled to 480 px, "
                    "which finds faces from about 1/20 of its long side (as OpenCV's YuNet at 640 px); a "
                    "12 MP group photo then costs what a portrait does.")


@dataclass(frozen=True)
class AnalyzeOptions:
    include: frozenset[str] = frozenset()
    threshold: float | None = None  # matching threshold for this request; None = the server's
    min_face_size: int = 0  # effective value sent to Triton (server's and request's larger)
    max_faces: int = 0  # effective cap (server's and request's smaller; 0 = none)
    min_confidence: float = 0.0  # faces with a lower detection score are dropped
    candidates: int = 0  # the k best gallery matches per face; 0 = none (the contract's response)
    small_faces: bool = True  # False: the one letterbox pass (faces from ~1/20 of the long side)


def parse_include(raw: str | None) -> frozenset[str]:
    if not raw:
        return frozenset()
    parts = {p.strip().lower() for p in raw.split(",") if p.strip()}
    unknown = sorted(parts - set(INCLUDABLE))
    if unknown:
        raise InvalidField(f"include: unknown {', '.join(unknown)}; choose from {', '.join(INCLUDABLE)}")
    return frozenset(parts)


def resolve(settings: Settings, include: str | None = None, threshold: float | None = None,
            min_face_size: int | None = None, max_faces: int | None = None,
            min_confidence: float | None = None, candidates: int | None = None,
            small_faces: bool | None = None) -> AnalyzeOptions:
    lim, det = settings.limits, settings.detection
    if threshold is not None and not lim.threshold_min <= threshold <= lim.threshold_max:
        raise InvalidField(f"threshold must be within [{lim.threshold_min}, {lim.threshold_max}]")
    if min_face_size is not None and not 0 <= min_face_size <= lim.min_face_size_max:
        raise InvalidField(f"min_face_size must be within [0, {lim.min_face_size_max}] pixels")
    server_cap = det.max_faces or lim.max_faces_max
    if max_faces is not None and not 1 <= max_faces <= server_cap:
        raise InvalidField(f"max_faces must be within [1, {server_cap}]")
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise InvalidField("min_confidence must be within [0, 1]")
    if candidates is not None and not 1 <= candidates <= lim.candidates_max:
        raise InvalidField(f"candidates must be within [1, {lim.candidates_max}]")
    return AnalyzeOptions(
        include=parse_include(include), threshold=threshold,
        min_face_size=max(det.min_face_size, min_face_size or 0),
        max_faces=min(v for v in (det.max_faces, max_faces) if v) if (det.max_faces or max_faces) else 0,
        min_confidence=min_confidence or 0.0, candidates=candidates or 0,
        small_faces=det.small_faces if small_faces is None else small_faces)


async def analyze_options(  # async: no thread-pool hop (api.deps)
    settings: SettingsDep,
    include: str | None = Query(None, description=INCLUDE_HELP, examples=["landmarks,quality"]),
    threshold: float | None = Query(None, description="matching threshold (cosine) for this request, within "
                                    "FA_LIMITS_THRESHOLD_MIN..MAX (0.2..0.95); default FA_MATCH_THRESHOLD",
                                    examples=[0.5]),
    min_face_size: int | None = Query(None, description="ignore faces whose box is smaller (pixels of the "
                                      "original photo); the server's FA_DETECT_MIN_FACE_SIZE still applies "
                                      "when larger. A larger minimum also makes detection cheaper.",
                                      examples=[40]),
    max_faces: int | None = Query(None, description="keep only the largest N faces; at most the server's "
                                  "FA_DETECT_MAX_FACES (or FA_LIMITS_MAX_FACES_MAX when that is 0)",
                                  examples=[5]),
    min_confidence: float | None = Query(None, description="drop faces with a lower detection score, 0..1 "
                                         "(the detector already drops those under 0.6)", examples=[0.9]),
    candidates: int | None = Query(None, description=CANDIDATES_HELP, examples=[3]),
    small_faces: bool | None = Query(None, description=SMALL_FACES_HELP, examples=[False]),
) -> AnalyzeOptions:
    return resolve(settings, include, threshold, min_face_size, max_faces, min_confidence, candidates,
                   small_faces)
