"""The API never compares embeddings of two face_multitask versions (docs/kubernetes.md).

The new version here is the served model with its embedding's dimensions reversed: a model
whose embeddings are consistent with themselves (the same photos match each other) but
unrelated to the old version's (cosine about 0 across versions). Had any request compared a
new-version embedding with the old gallery, the registered person would not be recognised and
new unknowns would be created; the assertions below would catch either.
"""

from __future__ import annotations

import asyncio

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from export import publish
from pipeline import contract as C
from tests.integration.conftest import api_settings, running_api

pytestmark = pytest.mark.triton

WOMAN = "verification/images/pyfeat_video_woman/pexels_woman_WolfgangLanger_Pexels_f{:04d}.jpg"
BIDEN = "verification/images/Joe_Biden/biden.jpg"


def _reversed_embedding(src, dst):
    """The same graph with its embedding output reversed: a model of another embedding space."""
    model = onnx.load(str(src))
    graph = model.graph
    producer = next(n for n in graph.node if C.MT_EMBEDDING in n.output)
    producer.output[list(producer.output).index(C.MT_EMBEDDING)] = "embedding_unreversed"
    graph.initializer.append(numpy_helper.from_array(np.arange(C.EMBEDDING_DIM - 1, -1, -1, dtype=np.int64),
                                                     "reverse_index"))
    graph.node.append(helper.make_node("Gather", ["embedding_unreversed", "reverse_index"], [C.MT_EMBEDDING], axis=1))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


async def _table(repo_db, sql):
    async with repo_db.transaction() as tx:
        return await tx.fetchall(sql)


def _publish(registry, repo, triton, keep=()):
    keep_serving = {C.MULTITASK: tuple(keep)} if keep else None
    published = publish.write_repository(registry, repo, progress=lambda m: None, keep_serving=keep_serving)
    assert publish.load_into_triton(triton.http_url, published, repo, progress=lambda m: None)


async def test_a_promotion_never_compares_versions_and_reembed_resumes_matching(
        triton, triton_settings, model_stack, built_models, shared_data, tmp_path):
    from api.maintenance import reembed

    settings, registry, repo = model_stack
    old = registry.production(C.MULTITASK)
    photo = lambda rel: (shared_data / rel).read_bytes()  # noqa: E731

    async def analyze(api, rel, mode="track"):
        return await api.post(f"/analyze?mode={mode}", files={"file": ("p.jpg", photo(rel))})

    async with running_api(api_settings(triton_settings, tmp_path, "sqlite")) as api:
        s = api.app.state.services
        known = (await api.post("/register", files={"file": ("a.jpg", photo(WOMAN.format(0)))},
                                data={"person_name": "Version Test"})).json()["person_id"]
        unknown = (await analyze(api, BIDEN)).json()["faces"][0]["person_id"]
        assert s.identity.gallery_version == str(old.version)

        new = registry.log_onnx(C.MULTITASK, _reversed_embedding(built_models[C.MULTITASK], tmp_path / "rev.onnx"),
                                {"purpose": "embedding-version test"})
        registry.set_production(C.MULTITASK, new.version)
        try:
            # 1. publish keeping the old version loaded: the API keeps asking for the gallery's,
            # and requests sent while the publish goes round keep matching the same person
            answers, done = [], asyncio.Event()

            async def traffic():
                while not done.is_set():
                    r = await analyze(api, WOMAN.format(218))
                    answers.append((r.status_code, r.json()["faces"][0]["person_id"] if r.status_code == 200 else r.text))

            task = asyncio.create_task(traffic())
            try:
                await asyncio.to_thread(_publish, registry, repo, triton, [old.version])
            finally:
                done.set()
                await task
            assert answers and set(answers) == {(200, known)}, answers[:3]
            face = (await analyze(api, WOMAN.format(218))).json()["faces"][0]
            assert face["person_id"] == known
            assert (await analyze(api, BIDEN)).json()["faces"][0]["person_id"] == unknown
            # the pipeline's default is the new version (what mode=detect gets), and it is a
            # different embedding space: compared with the gallery it would have matched nobody
            detect = await s.inference.analyze(photo(WOMAN.format(218)))
            pinned = await s.inference.analyze(photo(WOMAN.format(218)), multitask_version=str(old.version))
            assert (detect.model_version, pinned.model_version) == (str(new.version), str(old.version))
            assert abs(float(detect.faces[0].embedding @ pinned.faces[0].embedding)) < 0.5

            # 2. the old version unloaded before reembed (the unsafe order): identity pauses with
            # 503 gallery_reembedding, nothing is written; faces without identity still work
            _publish(registry, repo, triton)
            before = await _table(s.repo, "SELECT COUNT(*) FROM face_detections")
            people = await _table(s.repo, "SELECT COUNT(*) FROM unknown_faces")
            for mode in ("track", "search"):
                r = await analyze(api, WOMAN.format(218), mode)
                assert r.status_code == 503 and r.json()["error"] == "gallery_reembedding", r.text
                assert int(r.headers["Retry-After"]) > 0
            r = await api.post("/register", files={"file": ("a.jpg", photo(WOMAN.format(218)))},
                               data={"person_name": "Version Test"})
            assert r.status_code == 503 and r.json()["error"] == "gallery_reembedding"
            r = await api.post("/verify", files={"file1": ("a.jpg", photo(WOMAN.format(218)))},
                               data={"person_id": known})
            assert r.status_code == 503 and r.json()["error"] == "gallery_reembedding"
            detected = await analyze(api, WOMAN.format(218), "detect")
            assert detected.status_code == 200 and len(detected.json()["faces"]) == 1
            assert await _table(s.repo, "SELECT COUNT(*) FROM face_detections") == before
            assert await _table(s.repo, "SELECT COUNT(*) FROM unknown_faces") == people

            # 3. reembed: the gallery moves to the new version in one transaction and matching
            # resumes with the same people
            assert await reembed(s.settings, progress=lambda m: None) == 2
            versions = await _table(s.repo, "SELECT model_version FROM unknown_faces UNION ALL "
                                            "SELECT model_version FROM known_faces UNION ALL "
                                            "SELECT model_version FROM known_face_samples")
            assert {v for (v,) in versions} == {str(new.version)}
            face = (await analyze(api, WOMAN.format(218))).json()["faces"][0]
            assert face["person_id"] == known and face["identity"] == "known"
            assert (await analyze(api, BIDEN)).json()["faces"][0]["person_id"] == unknown
            assert s.identity.gallery_version == str(new.version)
            r = await api.post("/verify", files={"file1": ("a.jpg", photo(WOMAN.format(218)))},
                               data={"person_id": known})
            assert r.status_code == 200 and r.json()["verified"] is True
            # no unknown was created for a face that belonged to someone, at any step
            assert await _table(s.repo, "SELECT COUNT(*) FROM unknown_faces") == people
        finally:
            registry.set_production(C.MULTITASK, old.version)
            _publish(registry, repo, triton)
        await asyncio.sleep(0)
