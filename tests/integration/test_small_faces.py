"""Small faces in a large photo, through the real Triton: the tiled pass finds faces down to the
promised minimum (24 px), its tiles are batched by the detector's dynamic batcher, and one-face
photos come out as the single 480 px pass gave them."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from export import group_photos, metrics
from pipeline import contract as C
from pipeline.align import face_chips
from pipeline.decode import decode_image
from pipeline.detect import DETECTOR_MIN_FACE, MIN_FACE_SIZE, letterbox, postprocess
from tests.integration.test_pipeline_triton import OUTPUTS, _inputs, analyze
from tools.triton_local import inference_counts

pytestmark = pytest.mark.triton


def analyze_small(client, data: bytes, min_face_size: int = 12, max_faces: int = 0) -> dict[str, np.ndarray]:
    """face_pipeline asked for the small-face plan: MIN_FACE_SIZE 12 plans as for 24 px (the
    detector at 1:1) and keeps faces down to 12 px."""
    inputs = _inputs(data)
    for name, value in ((C.PL_MIN_FACE_SIZE, min_face_size), (C.PL_MAX_FACES, max_faces)):
        if value:
            t = grpcclient.InferInput(name, [1, 1], "INT32")
            t.set_data_from_numpy(np.array([[value]], np.int32))
            inputs.append(t)
    res = client.infer(C.PIPELINE, inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS])
    return {n: res.as_numpy(n)[0] for n in OUTPUTS}


def _detector_counts(metrics_url: str) -> tuple[float, float]:
    return inference_counts(metrics_url, (C.DETECTOR,))[C.DETECTOR]


def test_small_faces_are_found_in_a_large_group_photo(client, triton, shared_data):
    rng = np.random.default_rng(7)
    sources, backgrounds = group_photos.load_sources(shared_data), group_photos.load_backgrounds(shared_data)
    sizes = [16, 20, 24, 32, 48, 64, 96, 160]
    photo = group_photos.scattered(sources, backgrounds, 3600, 2400, sizes, 80, rng, "test_crowd")
    assert len(photo.boxes) >= 60

    before = _detector_counts(triton.metrics_url)
    out = analyze_small(client, photo.jpeg)
    after = _detector_counts(triton.metrics_url)

    found = out[C.PL_BOXES]
    pairs = metrics.match_pairs(photo.boxes.tolist(), found.tolist())
    f_sizes = np.minimum(found[:, 2] - found[:, 0], found[:, 3] - found[:, 1])
    buckets = metrics.by_size(photo.sizes.tolist(), f_sizes.tolist(), pairs, (16, 24, 48, 256))
    print("recall/precision by size:", buckets)
    # measured on the full evaluation set (README): ~0.95 at 24-32 px, 1.00 from 48 px; the
    # single 480 px pass this photo used to get sees these faces at 3 to 21 px and finds none
    assert buckets["24-48"]["recall"] >= 0.85, buckets
    assert buckets["48-256"]["recall"] >= 0.95, buckets
    assert len(pairs) / len(found) >= 0.95, "precision"
    assert out[C.PL_IMAGE_SIZE].tolist() == [3600, 2400]
    assert out[C.PL_EMBEDDINGS].shape == (len(found), C.EMBEDDING_DIM)
    areas = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
    assert np.all(np.diff(areas) <= 1e-3), "faces must come largest first"

    # the tiles went to the detector as requests of a few tiles each, so many more detector
    # inferences than requests; the dynamic batcher ran them in batches
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences >= 20, inferences
    assert inferences / executions >= 4, (inferences, executions)


def test_the_faces_cap_keeps_the_largest_of_a_crowd(client, shared_data):
    rng = np.random.default_rng(3)
    sources, backgrounds = group_photos.load_sources(shared_data), group_photos.load_backgrounds(shared_data)
    photo = group_photos.scattered(sources, backgrounds, 2400, 1600, [24, 32, 64, 128], 30, rng, "cap")
    capped = analyze_small(client, photo.jpeg, max_faces=5)[C.PL_BOXES]
    full = analyze_small(client, photo.jpeg)[C.PL_BOXES]
    assert len(full) > 5 and len(capped) == 5
    assert np.allclose(capped, full[:5]), "the cap keeps the five largest of all the faces"


def test_without_a_request_the_service_keeps_its_single_pass(client, shared_data):
    """The deployed default (min_face_size 0 in face_pipeline's config) is the one 480 px pass:
    the small faces of a large photo are not looked for unless asked."""
    rng = np.random.default_rng(5)
    sources, backgrounds = group_photos.load_sources(shared_data), group_photos.load_backgrounds(shared_data)
    photo = group_photos.grid(sources, backgrounds, 1920, 1080, 32, 8, 4, rng, "grid")
    assert len(analyze(client, photo.jpeg)[C.PL_BOXES]) <= 4  # 32 px faces at 8 px in 480
    assert len(analyze_small(client, photo.jpeg)[C.PL_BOXES]) >= 28


@pytest.fixture(scope="module")
def letterbox_only(built_models):
    """What the single 480 px letterbox pass every photo got before the small-face plan gives:
    boxes and, from its landmarks, embeddings and P(male)."""
    det = ort.InferenceSession(str(built_models[C.DETECTOR]), providers=["CPUExecutionProvider"])
    mt = ort.InferenceSession(str(built_models[C.MULTITASK]), providers=["CPUExecutionProvider"])

    def analyze_once(data: bytes):
        rgb = decode_image(data)
        x, scale = letterbox(rgb)
        loc, conf, lmk = det.run(None, {C.DET_INPUT: x[None]})
        boxes, _, landmarks = postprocess(loc[0], conf[0], lmk[0], C.DETECTOR_SIZE, scale, rgb.shape[1], rgb.shape[0])
        emb, _, gender = mt.run(None, {C.MT_INPUT: face_chips(rgb, landmarks)})
        return boxes, emb, gender[:, 1]

    return analyze_once


def test_one_face_photos_are_unchanged(client, shared_data, letterbox_only):
    """The photos of one person: the same one face where the single 480 px pass put it, the same
    gender, an embedding of the same person (the chip is aligned from landmarks found at a
    different scale, so not bit-identical except on photos the plan leaves to that pass)."""
    paths = sorted((shared_data / "age_gender" / "images").glob("*"))
    assert len(paths) >= 9
    for path in paths:
        data = path.read_bytes()
        ref_boxes, ref_emb, ref_male = letterbox_only(data)
        default = analyze(client, data)  # the deployed default: that very pass, bit for bit
        assert np.allclose(default[C.PL_BOXES], ref_boxes, atol=1e-3), path.name
        assert float(default[C.PL_EMBEDDINGS][0] @ ref_emb[0]) > 0.999, path.name
        out = analyze_small(client, data)
        assert len(out[C.PL_BOXES]) == len(ref_boxes) == 1, path.name
        assert metrics.iou(out[C.PL_BOXES][0], ref_boxes[0]) >= 0.85, path.name
        assert (out[C.PL_GENDER][0][1] >= 0.5) == (ref_male[0] >= 0.5), path.name
        cos = float(out[C.PL_EMBEDDINGS][0] @ ref_emb[0])
        # a photo the letterbox no longer covers alone (480x720: one native pass) is aligned from
        # landmarks found at 1:1 instead of 0.67; lowest measured 0.88 (dame_girl1), while
        # different people stay below 0.25 on ../shared/data
        assert cos >= 0.8, (path.name, cos)
        w, h = out[C.PL_IMAGE_SIZE]
        if max(w, h) <= C.DETECTOR_SIZE * MIN_FACE_SIZE / DETECTOR_MIN_FACE:  # the plan is that very pass
            assert np.allclose(out[C.PL_BOXES][0], ref_boxes[0], atol=1e-3), path.name
            assert cos > 0.999, path.name


def test_small_faces_benchmark_driver_measures_both_photo_sets(triton, built_models, shared_data, tmp_path):
    from loadtests import small_faces_benchmark

    r = small_faces_benchmark.run(1.0, tmp_path, triton.grpc_url, triton.metrics_url,
                                  built_models[C.DETECTOR], built_models[C.MULTITASK], peers=None,
                                  data=shared_data, group_seconds=1.0, light=True)
    for part in (r["one_face"]["inprocess_single_480_pass"], r["one_face"]["inprocess_plan_24px"],
                 r["one_face"]["triton_plan_24px"], r["group"]["inprocess_plan_24px"],
                 r["group"]["triton_plan_24px"]):
        assert part["images"] > 0 and part["images_per_s"] > 0
    (name, pasted), = r["group"]["photos"].items()
    assert r["one_face"]["triton_plan_24px"]["errors"] == 0 and r["group"]["triton_plan_24px"]["errors"] == 0
    assert r["group"]["found_by_us"][name] >= 0.8 * pasted
    assert "| group photos: Triton c4, 24 px plan |" in (tmp_path / "small_faces.md").read_text()
