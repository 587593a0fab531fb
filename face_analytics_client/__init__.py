"""Python client for the Face Analytics API: ``FaceAnalyticsClient`` (blocking) and
``AsyncFaceAnalyticsClient`` (asyncio), typed results, retries on 429/503, batching.
Command line: ``face-analytics photo.jpg`` (or ``python test_api.py photo.jpg``)."""

from face_analytics_client.client import (
    NO_RETRY, AsyncFaceAnalyticsClient, FaceAnalyticsClient, Retry,
)
from face_analytics_client.errors import ApiError, ConnectionFailed, FaceAnalyticsError
from face_analytics_client.webhooks import verify_signature
from face_analytics_client.models import (
    Analysis, BatchAnalysis, BatchItemError, BBox, Bucket, Candidate, Changed, DetectionSeries, Face, FaceQuality, Health, Merged, Person, PersonsPage,
    Registration, Sample, SampleDeleted, SamplesPage, Sighting, SightingsPage, Stats, TopUnknown,
    Verification, VerifyFace,
)

__all__ = [
    "FaceAnalyticsClient", "AsyncFaceAnalyticsClient", "Retry", "NO_RETRY",
    "FaceAnalyticsError", "ApiError", "ConnectionFailed", "verify_signature",
    "Analysis", "BatchAnalysis", "BatchItemError", "BBox", "Bucket", "Candidate", "Changed", "DetectionSeries", "Face", "FaceQuality", "Health", "Person",
    "PersonsPage", "Registration", "Stats", "TopUnknown", "Merged", "Sample", "SampleDeleted",
    "SamplesPage", "Sighting", "SightingsPage", "Verification", "VerifyFace",
]
