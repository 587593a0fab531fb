"""bootstrap -> publish -> promote a new version -> publish: the running Triton switches
versions without a restart, and requests sent during the switch keep succeeding."""

from __future__ import annotations

import threading

import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from export import bootstrap, publish
from pipeline import contract as C
from tests.integration.test_pipeline_triton import analyze

pytestmark = pytest.mark.triton


def _variant(src, dst, tag: str):
    """Same weights, different bytes: what a retrained model looks like to the registry."""
    model = onnx.load(str(src))
    entry = model.metadata_props.add()
    entry.key, entry.value = "variant", tag
    onnx.save(model, str(dst))
    return dst


class Traffic(threading.Thread):
    """Sends pipeline requests until stopped; records every failure."""

    def __init__(self, url: str, photo: bytes):
        super().__init__(daemon=True)
        self.url, self.photo = url, photo
        self.stop_event = threading.Event()
        self.ok, self.errors = 0, []

    def run(self):
        client = grpcclient.InferenceServerClient(self.url)
        while not self.stop_event.is_set():
            try:
                out = analyze(client, self.photo)
                assert len(out[C.PL_EMBEDDINGS]) == 1
                self.ok += 1
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                self.errors.append(repr(exc))
        client.close()


def _served_versions(http: httpclient.InferenceServerClient, name: str) -> set[str]:
    return {m["version"] for m in http.get_model_repository_index()
            if m["name"] == name and m.get("state") == "READY"}


def test_promote_and_rollback_switch_versions_without_restart(triton, model_stack, built_models,
                                                              shared_data, tmp_path):
    settings, registry, repo = model_stack
    http = httpclient.InferenceServerClient(triton.http_url)
    before = registry.production(C.MULTITASK)
    assert _served_versions(http, C.MULTITASK) == {str(before.version)}

    # re-running bootstrap with unchanged models registers nothing new
    again = bootstrap.register(registry, built_models, progress=lambda m: None)
    assert again[C.MULTITASK].version == before.version

    new = registry.log_onnx(C.MULTITASK, _variant(built_models[C.MULTITASK], tmp_path / "mt.onnx", "v2"),
                            {"purpose": "promotion test"})
    # greater, not +1: other tests of the session (test_cluster_publish) register versions too
    assert new.version > before.version

    photo = (shared_data / "verification" / "images" / "Joe_Biden" / "biden.jpg").read_bytes()
    traffic = Traffic(triton.grpc_url, photo)
    traffic.start()
    try:
        registry.set_production(C.MULTITASK, new.version)
        published = publish.write_repository(registry, repo, progress=lambda m: None)
        assert publish.load_into_triton(triton.http_url, published, repo, progress=lambda m: None)
        assert _served_versions(http, C.MULTITASK) == {str(new.version)}
        assert http.get_model_config(C.MULTITASK)["parameters"]["mlflow_version"]["string_value"] \
            == str(new.version)
        assert not (repo / C.MULTITASK / str(before.version)).exists(), "old version pruned once loaded"

        # rollback = promote the previous version and publish again
        registry.set_production(C.MULTITASK, before.version)
        published = publish.write_repository(registry, repo, progress=lambda m: None)
        publish.load_into_triton(triton.http_url, published, repo, progress=lambda m: None)
        assert _served_versions(http, C.MULTITASK) == {str(before.version)}
    finally:
        traffic.stop_event.set()
        traffic.join(30)
        http.close()
    assert traffic.errors == [], traffic.errors[:3]
    assert traffic.ok > 0


async def test_new_model_version_is_reported_and_stored_embeddings_are_recomputed(
        triton, triton_settings, model_stack, built_models, shared_data, tmp_path):
    from api.maintenance import reembed
    from tests.integration.conftest import api_settings, running_api

    settings, registry, repo = model_stack
    woman = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"
    before = registry.production(C.MULTITASK)
    async with running_api(api_settings(triton_settings, tmp_path, "sqlite")) as api:
        photo = (shared_data / woman.format(0)).read_bytes()
        known = (await api.post("/register", files={"file": ("a.jpg", photo)},
                                data={"person_name": "Model"})).json()["person_id"]
        biden = (shared_data / "verification/images/Joe_Biden/biden.jpg").read_bytes()
        await api.post("/analyze", files={"file": ("b.jpg", biden)})
        api_config = api.app.state.services.settings
        assert await reembed(api_config, progress=lambda m: None) == 0  # all current

        new = registry.log_onnx(C.MULTITASK, _variant(built_models[C.MULTITASK], tmp_path / "mt.onnx", "v3"),
                                {"purpose": "re-embedding test"})
        registry.set_production(C.MULTITASK, new.version)
        try:
            published = publish.write_repository(registry, repo, progress=lambda m: None)
            publish.load_into_triton(triton.http_url, published, repo, progress=lambda m: None)
            health = (await api.get("/health")).json()
            assert health["models"][C.MULTITASK]["mlflow_version"] == str(new.version)

            # one registered sample and one unknown person were embedded by the old version
            assert await reembed(api_config, progress=lambda m: None) == 2
            assert await reembed(api_config, progress=lambda m: None) == 0
            # no wait for the worker's sync loop: identify() replays the change log under the
            # gallery lock before it matches (track mode)
            face = (await api.post("/analyze", files={"file": ("c.jpg", (shared_data / woman.format(218)).read_bytes())})).json()["faces"][0]
            assert face["person_id"] == known
        finally:
            registry.set_production(C.MULTITASK, before.version)
            published = publish.write_repository(registry, repo, progress=lambda m: None)
            publish.load_into_triton(triton.http_url, published, repo, progress=lambda m: None)
