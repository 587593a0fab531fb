"""Schema-driven fuzzing of the OpenAPI spec (schemathesis), bounded for CI: whatever the
generated request, the answer is never a 5xx and an error is always the JSON error shape."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tools.api_process import start_api, stop

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def api_url(triton, tmp_path_factory):
    proc, url = start_api(triton.grpc_url, tmp_path_factory.mktemp("fuzz"), TRITON_HTTP_URL=triton.http_url)
    yield url
    stop(proc)


def test_no_request_makes_the_server_fail(api_url):
    # the operations are driven by hand: schemathesis' pytest plugin does not run on pytest 9
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 8
    fuzzed = {(o.method.upper(), o.path) for o in operations}
    assert {("POST", "/verify"), ("POST", "/persons/{person_id}/merge"), ("GET", "/persons/{person_id}/samples"),
            ("DELETE", "/persons/{person_id}/samples/{sample_id}"),
            ("GET", "/persons/{person_id}/samples/{sample_id}/crop"), ("GET", "/persons/{person_id}/sightings"),
            ("GET", "/persons"), ("POST", "/analyze")} <= fuzzed  # issue 14's endpoints and parameters
    calls = []

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(base_url=api_url, timeout=60)
            calls.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.text[:300])
            if response.status_code >= 400:
                body = response.json()
                assert body["success"] is False and body["error"] and body["message"]

        check()
    assert len(calls) >= 3 * len(operations)  # the fuzzer really sent requests
