"""Response models: the JSON shapes of the API contract, plus what users need beyond it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_serializer


class BBox(BaseModel):
    x: int
    y: int
    width: int
    height: int


class FaceQuality(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "overall": 0.83, "passed": True, "reason": None, "sharpness": 412.5, "yaw": -4.1, "pitch": 6.3,
        "roll": 1.2, "face_size": 154, "detection_score": 0.9991,
        "scores": {"sharpness": 1.0, "pose": 0.9, "face_size": 1.0, "detection_score": 0.9991}}})
    overall: float = Field(description="product of the part scores, 0..1")
    passed: bool = Field(description="at or above the quality gate (FA_QUALITY_MIN_SCORE); a face below it "
                                     "that matches nobody is not remembered as a new unknown person")
    reason: str | None = Field(None, description="the weakest part when the face is below the gate: "
                                                 "sharpness, pose, face_size or detection_score")
    sharpness: float = Field(description="variance of the Laplacian of the aligned face (grey); higher is sharper")
    yaw: float = Field(description="degrees, estimated from the 5 landmarks")
    pitch: float = Field(description="degrees, estimated from the 5 landmarks")
    roll: float = Field(description="degrees: tilt of the eye line")
    face_size: int = Field(description="shorter side of the box, pixels of the original photo")
    detection_score: float
    scores: dict[str, float] = Field(description="each part mapped to 0..1")


class Candidate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "person_id": "known_john_doe_1703123456", "identity": "known", "person_name": "John Doe",
        "similarity": 0.7342}})
    person_id: str
    identity: str = Field(description='"known" or "unknown"')
    person_name: str | None = Field(None, description="for known people")
    similarity: float = Field(description="cosine similarity to the person's template; may be below the "
                                          "matching threshold")


# per-face extras: present only when asked for (include=..., candidates=k) or, for quality, when the
# face is below the gate; absent otherwise, so the default response is exactly the contract's
FACE_EXTRAS = ("landmarks", "embedding", "crop", "quality", "candidates")


class FaceOut(BaseModel):
    bbox: BBox
    confidence: float = Field(description="detection score, 0..1")
    age: float = Field(description="estimated age in years")
    gender: str = Field(description='"male" or "female"')
    gender_confidence: float
    identity: str | None = Field(description='"known" or "unknown"; null with mode=detect')
    person_id: str | None = Field(description="always set with mode=track (the default), except for a face below the "
                                              "quality gate that matches nobody (not remembered); null with "
                                              "mode=search when nobody matches, and with mode=detect")
    person_name: str | None = Field(None, description="for known people")
    similarity: float | None = Field(None, description="cosine similarity of the match; null for a new unknown person")
    landmarks: list[list[float]] | None = Field(None, description="include=landmarks: 5 points [x, y], original "
                                                "pixels: eye L, eye R, nose, mouth L, mouth R")
    embedding: list[float] | None = Field(None, description="include=embedding: 128 floats, L2-normalised; "
                                          "comparable only within one face_multitask version (/health)")
    crop: str | None = Field(None, description="include=crop: the aligned face canvas (144x144), base64 JPEG")
    quality: FaceQuality | None = Field(None, description="include=quality, and always when the face is below "
                                        "the quality gate")
    candidates: list[Candidate] | None = Field(None, description="candidates=k: the k most similar people of the "
                                               "gallery, best first (fewer when the gallery is smaller)")

    @model_serializer(mode="wrap")
    def _omit_absent_extras(self, handler):
        body = handler(self)
        for key in FACE_EXTRAS:
            if body.get(key) is None:
                body.pop(key, None)
        return body


class AnalyzeResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "success": True,
        "faces": [{"bbox": {"x": 100, "y": 50, "width": 150, "height": 200}, "confidence": 0.95,
                   "age": 25.5, "gender": "female", "gender_confidence": 0.85, "identity": "unknown",
                   "person_id": "unknown_1703123456_7890", "person_name": None, "similarity": None}],
        "message": "Successfully analyzed 1 face(s)",
        "image": {"width": 640, "height": 480},
    }})
    success: bool = True
    faces: list[FaceOut]
    message: str
    image: dict[str, int] | None = None
    faces_limited_to: int | None = Field(
        None, description="present only when the photo had more faces than FA_DETECT_MAX_FACES:"
                          " the largest this many were analysed and stored, the rest ignored")

    @model_serializer(mode="wrap")
    def _omit_unapplied_limit(self, handler):
        # the default response stays exactly the contract's; the field appears only when it applies
        body = handler(self)
        if body.get("faces_limited_to") is None:
            body.pop("faces_limited_to", None)
        return body


class BatchItemError(BaseModel):
    success: bool = False
    error: str
    message: str


class BatchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "success": True, "message": "Analyzed 1 of 2 image(s)",
        "results": [
            {"success": True, "faces": [], "message": "No faces detected in the image",
             "image": {"width": 640, "height": 480}},
            {"success": False, "error": "unsupported_media_type", "message": "not an image type we read"}]}})
    success: bool = True
    message: str
    results: list[AnalyzeResponse | BatchItemError] = Field(description="one per image, in the order sent")


class RegisterResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "success": True, "message": "Successfully registered John Doe",
        "person_id": "known_john_doe_1703123456", "samples": 1, "promoted_unknown_id": None}})
    success: bool = True
    message: str
    person_id: str
    samples: int = 1
    promoted_unknown_id: str | None = None
    similarity: float | None = Field(None, description="to the existing person's template, when the name existed")


class TopUnknown(BaseModel):
    person_id: str
    detection_count: int
    last_seen: datetime


class StatsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "known_faces": 10, "unknown_faces": 25, "total_detections": 150, "recent_detections_24h": 12,
        "top_unknown_faces": [{"person_id": "unknown_1703123456_7890", "detection_count": 5,
                               "last_seen": "2023-12-21T10:30:00"}],
        "last_updated": "2023-12-21T12:00:00"}})
    known_faces: int
    unknown_faces: int
    total_detections: int
    recent_detections_24h: int
    top_unknown_faces: list[TopUnknown]
    last_updated: datetime


class DetectionBucket(BaseModel):
    start: datetime = Field(description="start of the hour or day, UTC")
    count: int


class DetectionSeries(BaseModel):
    window: str = Field(description='"24h" (hourly buckets) or "30d" (daily buckets)')
    bucket: str = Field(description='"hour" or "day"')
    buckets: list[DetectionBucket]


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "status": "healthy", "services": {"face_detector": True, "face_analytics": True, "database": True},
        "models": {"face_detector": {"ready": True, "version": "1", "mlflow_version": "1"}}}})
    status: str
    services: dict[str, bool]
    models: dict[str, dict] = {}
    # several Triton replicas only: address -> model -> MLflow version served (None: not ready)
    replicas: dict[str, dict[str, str | None]] = {}
    version_skew: bool = False
    # {"model_version": face_multitask version of the gallery's embeddings, "identity": "active" | "paused"}
    gallery: dict[str, str | None] = {}


class Person(BaseModel):
    person_id: str
    identity: str
    person_name: str | None = None
    detection_count: int
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class PersonsPage(BaseModel):
    total: int
    limit: int
    offset: int
    persons: list[Person]


class PersonPatch(BaseModel):
    person_name: str


class PersonChanged(BaseModel):
    success: bool = True
    message: str
    person_id: str


PERSON_ID_PATTERN = r"^[A-Za-z0-9_.-]+$"  # known_<slug>_<ts>, unknown_<ts>_<4 digits>


class MergeRequest(BaseModel):
    into: str = Field(min_length=1, max_length=128, pattern=PERSON_ID_PATTERN,
                      description="the person to merge into")


class Merged(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "success": True, "message": "unknown_1703123456_7890 merged into known_john_doe_1703123456",
        "person_id": "known_john_doe_1703123456", "merged_id": "unknown_1703123456_7890", "identity": "known"}})
    success: bool = True
    message: str
    person_id: str = Field(description="the person that remains")
    merged_id: str = Field(description="the person that no longer exists")
    identity: str


class SampleOut(BaseModel):
    sample_id: int
    created_at: datetime | None = None
    model_version: str | None = None
    has_crop: bool


class SamplesPage(BaseModel):
    person_id: str
    samples: list[SampleOut]


class SampleDeleted(BaseModel):
    success: bool = True
    message: str
    person_id: str
    samples: int = Field(description="samples left")


class Sighting(BaseModel):
    detection_id: int
    detected_at: datetime
    identity: str
    bbox: BBox
    confidence: float
    age: float | None = None
    gender: str | None = None
    gender_confidence: float | None = None
    similarity: float | None = None


class SightingsPage(BaseModel):
    person_id: str
    total: int
    limit: int
    offset: int
    sightings: list[Sighting]


class VerifyFace(BaseModel):
    bbox: BBox
    confidence: float
    faces_in_image: int


class VerifyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "success": True, "similarity": 0.52, "verified": True, "threshold": 0.363,
        "face1": {"bbox": {"x": 100, "y": 50, "width": 150, "height": 200}, "confidence": 0.98,
                  "faces_in_image": 1},
        "face2": {"bbox": {"x": 80, "y": 40, "width": 120, "height": 160}, "confidence": 0.97,
                  "faces_in_image": 1},
        "person_id": None, "person_name": None}})
    success: bool = True
    similarity: float = Field(description="cosine similarity of the two faces' embeddings")
    verified: bool = Field(description="similarity >= the deployed matching threshold")
    threshold: float
    face1: VerifyFace
    face2: VerifyFace | None = Field(None, description="null when compared with a person_id")
    person_id: str | None = None
    person_name: str | None = None


# -- webhooks -------------------------------------------------------------------------------
WEBHOOK_EVENTS_HELP = ('event types: person.known_seen, person.unknown_created, person.unknown_seen (every '
                       'FA_WEBHOOK_UNKNOWN_SEEN_EVERY-th sighting), person.merged, person.deleted; or "*" for all')


class WebhookCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "url": "https://hooks.example.com/face-analytics", "events": ["person.known_seen", "person.unknown_created"],
        "description": "front door"}})
    url: str = Field(min_length=8, max_length=2048, description="http(s) URL that receives the POSTs")
    events: list[str] = Field(min_length=1, max_length=10, description=WEBHOOK_EVENTS_HELP)
    secret: str | None = Field(None, min_length=16, max_length=64,
                               description="HMAC-SHA256 key; generated when absent (then shown once, in the answer)")
    description: str | None = Field(None, max_length=100)


class DeliveryCounts(BaseModel):
    pending: int = 0
    delivered: int = 0
    failed: int = 0


class Webhook(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str | None = None
    created_at: datetime
    deliveries: DeliveryCounts | None = None
    last_error: str | None = Field(None, description="of the latest failed attempt: an HTTP status or the "
                                                     "kind of connection error")


class WebhookCreated(Webhook):
    model_config = ConfigDict(json_schema_extra={"example": {
        "success": True, "id": 1, "url": "https://hooks.example.com/face-analytics",
        "events": ["person.known_seen", "person.unknown_created"], "description": "front door",
        "created_at": "2023-12-21T12:00:00", "secret": "whsec_Vx3l9kS0c2N5...", "deliveries": None}})
    success: bool = True
    secret: str = Field(description="keep it: it is never shown again. Verify each delivery's X-FA-Signature with it")


class WebhookList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"success": True, "webhooks": [{
        "id": 1, "url": "https://hooks.example.com/face-analytics", "events": ["*"], "description": None,
        "created_at": "2023-12-21T12:00:00", "deliveries": {"pending": 0, "delivered": 42, "failed": 1},
        "last_error": "HTTP 500"}]}})
    success: bool = True
    webhooks: list[Webhook]


class WebhookDelivery(BaseModel):
    id: int
    event_id: str
    event_type: str
    state: str = Field(description="pending, delivered or failed (after FA_WEBHOOK_MAX_ATTEMPTS)")
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class WebhookDeliveries(BaseModel):
    success: bool = True
    deliveries: list[WebhookDelivery] = Field(description="the latest 50, newest first")
