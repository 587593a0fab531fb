"""The client's typed results (face_analytics_client.models) repeat the API's response schemas on
purpose, so the client never imports the server; this keeps the two in step: every field the
client reads exists in the server's schema, and what the client requires the server always sends."""

from __future__ import annotations

import pytest

from api import schemas as server
from face_analytics_client import models as client

PAIRS = [
    (client.BBox, server.BBox), (client.FaceQuality, server.FaceQuality), (client.Candidate, server.Candidate),
    (client.Face, server.FaceOut), (client.Analysis, server.AnalyzeResponse),
    (client.BatchItemError, server.BatchItemError), (client.BatchAnalysis, server.BatchResponse),
    (client.Registration, server.RegisterResponse), (client.TopUnknown, server.TopUnknown),
    (client.Stats, server.StatsResponse), (client.Health, server.HealthResponse),
    (client.Bucket, server.DetectionBucket), (client.DetectionSeries, server.DetectionSeries),
    (client.Person, server.Person), (client.PersonsPage, server.PersonsPage),
    (client.Changed, server.PersonChanged), (client.Merged, server.Merged), (client.Sample, server.SampleOut),
    (client.SamplesPage, server.SamplesPage), (client.SampleDeleted, server.SampleDeleted),
    (client.Sighting, server.Sighting), (client.SightingsPage, server.SightingsPage),
    (client.VerifyFace, server.VerifyFace), (client.Verification, server.VerifyResponse),
]


def test_every_client_model_is_paired():
    paired = {c for c, _ in PAIRS}
    models = {v for k, v in vars(client).items()
              if isinstance(v, type) and issubclass(v, client._Model) and v is not client._Model}
    assert models - paired == set(), "a new client model needs its server schema in PAIRS"


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_client_fields_are_the_servers(ours, theirs):
    missing = set(ours.model_fields) - set(theirs.model_fields)
    assert not missing, f"{ours.__name__} reads fields the server's {theirs.__name__} does not have: {missing}"
    for name, field in ours.model_fields.items():
        if field.is_required():
            assert theirs.model_fields[name].is_required(), \
                f"{ours.__name__}.{name} is required by the client but optional on the server"
