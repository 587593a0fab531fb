"""Typed results: the JSON shapes of the Face Analytics API.

Unknown fields are kept (``extra="allow"``) so an older client keeps working against a newer
server that adds optional fields (e.g. a per-face ``quality``).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class BBox(_Model):
    x: int
    y: int
    width: int
    height: int


class FaceQuality(_Model):
    """include=quality (and faces below the server's quality gate): parts and overall in [0, 1]."""
    overall: float
    passed: bool
    reason: str | None = None
    sharpness: float
    yaw: float
    pitch: float
    roll: float
    face_size: int
    detection_score: float
    scores: dict[str, float] = {}


class Candidate(_Model):
    """candidates=k: one of the k most similar people, whether or not above the threshold."""
    person_id: str
    identity: str
    person_name: str | None = None
    similarity: float


class Face(_Model):
    bbox: BBox
    confidence: float
    age: float
    gender: str
    gender_confidence: float
    identity: str | None = None  # null with mode=detect
    # null with mode=detect, with mode=search when nobody matches, and for a face below the
    # quality gate that matches nobody (not remembered; its quality says why)
    person_id: str | None = None
    person_name: str | None = None
    similarity: float | None = None
    quality: FaceQuality | None = None
    landmarks: list[list[float]] | None = None  # include=landmarks
    embedding: list[float] | None = None  # include=embedding
    crop: str | None = None  # include=crop: base64 JPEG of the aligned face
    candidates: list[Candidate] | None = None  # candidates=k, best first

    @property
    def label(self) -> str:
        """The name of a known person, else the person id (or "-" for nobody)."""
        return self.person_name or self.person_id or "-"


class Analysis(_Model):
    success: bool = True
    faces: list[Face]
    message: str
    image: dict[str, int] | None = None


class BatchItemError(_Model):
    """One photo of a batch that could not be analysed (the others are unaffected)."""
    success: bool = False
    error: str
    message: str


class BatchAnalysis(_Model):
    success: bool = True
    message: str
    results: list[Analysis | BatchItemError]  # one per photo, in the order sent


class Registration(_Model):
    success: bool = True
    message: str
    person_id: str
    samples: int = 1
    promoted_unknown_id: str | None = None
    similarity: float | None = None


class TopUnknown(_Model):
    person_id: str
    detection_count: int
    last_seen: datetime


class Stats(_Model):
    known_faces: int
    unknown_faces: int
    total_detections: int
    recent_detections_24h: int
    top_unknown_faces: list[TopUnknown]
    last_updated: datetime


class Health(_Model):
    status: str
    services: dict[str, bool]
    models: dict[str, dict] = {}

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


class Bucket(_Model):
    start: datetime
    count: int


class DetectionSeries(_Model):
    window: str
    bucket: str
    buckets: list[Bucket]


class Person(_Model):
    person_id: str
    identity: str
    person_name: str | None = None
    detection_count: int
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class PersonsPage(_Model):
    total: int
    limit: int
    offset: int
    persons: list[Person]


class Changed(_Model):
    """Answer of rename, merge and delete."""

    success: bool = True
    message: str
    person_id: str


class Merged(_Model):
    success: bool = True
    message: str
    person_id: str  # the person that remains (a known person survives whichever side it was on)
    merged_id: str  # the person that no longer exists
    identity: str


class Sample(_Model):
    sample_id: int
    created_at: datetime | None = None
    model_version: str | None = None
    has_crop: bool = False


class SamplesPage(_Model):
    person_id: str
    samples: list[Sample]


class SampleDeleted(_Model):
    success: bool = True
    message: str
    person_id: str
    samples: int


class Sighting(_Model):
    detection_id: int
    detected_at: datetime
    identity: str
    bbox: BBox
    confidence: float
    age: float | None = None
    gender: str | None = None
    gender_confidence: float | None = None
    similarity: float | None = None


class SightingsPage(_Model):
    person_id: str
    total: int
    limit: int
    offset: int
    sightings: list[Sighting]


class VerifyFace(_Model):
    bbox: BBox
    confidence: float
    faces_in_image: int


class Verification(_Model):
    success: bool = True
    similarity: float
    verified: bool
    threshold: float
    face1: VerifyFace
    face2: VerifyFace | None = None
    person_id: str | None = None
    person_name: str | None = None
