"""Small faces in a large photo, through the real Triton with the service's default settings:
the two-phase plan finds faces down to the promised minimum (24 px), its tiles are batched by the
detector's dynamic batcher, and one-face photos stop after the one 480 px letterbox pass and come
out as that pass gave them."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from export import group_photos, metrics
from pipeline import contract as C
from pipeline.align import face_chips
from pipeline.decode import decode_image
from pipeline.detect import MIN_FACE_SIZE, letterbox, postprocess
from pipeline.inprocess import InProcessPipeline
from loadtests import photo_sets
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
    out = analyze(client, photo.jpeg)  # no request option: the service's default
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


def test_a_group_photo_of_24_to_32_px_faces_is_found_by_default(client, triton, shared_data):
    """The letterbox sees these faces at 6-8 px and finds none, so phase 2 runs (native pass or
    tiles): more detector inputs than the one letterbox, and the faces are found."""
    rng = np.random.default_rng(5)
    sources, backgrounds = group_photos.load_sources(shared_data), group_photos.load_backgrounds(shared_data)
    photo = group_photos.scattered(sources, backgrounds, 1920, 1080, [24, 28, 32], 30, rng, "small_1080p")
    assert len(photo.boxes) >= 20 and photo.sizes.max() <= 33
    before = _detector_counts(triton.metrics_url)
    found = analyze(client, photo.jpeg)[C.PL_BOXES]
    after = _detector_counts(triton.metrics_url)
    pairs = metrics.match_pairs(photo.boxes.tolist(), found.tolist())
    assert len(pairs) >= 0.85 * len(photo.boxes), (len(pairs), len(photo.boxes))
    assert len(pairs) >= 0.95 * len(found), "precision"
    assert after[0] - before[0] > 1, "phase 2 ran"


def _one_face_12mp(shared_data, name: str = "grace_hopper.jpg") -> bytes:
    img = cv2.imread(str(shared_data / "age_gender" / "images" / name))
    ok, enc = cv2.imencode(".jpg", photo_sets.scale_to(img, 4000 * 3000), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return enc.tobytes()


def test_a_large_photo_of_one_big_face_stays_on_one_pass(client, triton, shared_data, letterbox_only):
    """A 12 MP portrait: the letterbox finds its face far above COARSE_FACE, so the detector sees
    one input (Triton's own count), and the face is where the single pass put it."""
    data = _one_face_12mp(shared_data)
    ref_boxes, ref_emb, _ = letterbox_only(data)
    before = _detector_counts(triton.metrics_url)
    out = analyze(client, data)
    after = _detector_counts(triton.metrics_url)
    assert after[0] - before[0] == 1, "one detector input: the letterbox"
    assert np.prod(out[C.PL_IMAGE_SIZE]) >= 11_000_000
    assert len(out[C.PL_BOXES]) == len(ref_boxes) == 1
    assert metrics.iou(out[C.PL_BOXES][0], ref_boxes[0]) >= 0.95
    # the chip comes from the reduced decode (the face keeps >= CHIP_FACE px there)
    assert float(out[C.PL_EMBEDDINGS][0] @ ref_emb[0]) >= 0.9


def test_the_in_process_pipeline_counts_its_phases(built_models, shared_data):
    pipe = InProcessPipeline(built_models[C.DETECTOR], built_models[C.MULTITASK], threads=1)
    assert len(pipe.analyze(_one_face_12mp(shared_data)).faces) == 1 and pipe.passes == 1
    rng = np.random.default_rng(11)
    sources, backgrounds = group_photos.load_sources(shared_data), group_photos.load_backgrounds(shared_data)
    photo = group_photos.grid(sources, backgrounds, 1920, 1080, 28, 8, 4, rng, "grid")
    found = [f.box.tolist() for f in pipe.analyze(photo.jpeg).faces]
    # 28 px faces sit near the detector's floor, so which windows a plan cuts moves single faces:
    # this grid with seeds 11-22 gave 24-32 of 32 with the tiles shaped per level (25 with seed
    # 11) and 20-32 with the square tiles before them (27); recall itself is make eval's to judge
    assert pipe.passes == 2 and len(metrics.match_pairs(photo.boxes.tolist(), found)) >= 24
    # asked for one pass: the letterbox sees these faces at 7 px and finds none of them
    assert len(pipe.analyze(photo.jpeg, single_pass=True).faces) == 0 and pipe.passes == 1


def _single_pass(data: bytes) -> list:
    inputs = _inputs(data)
    t = grpcclient.InferInput(C.PL_SINGLE_PASS, [1, 1], "INT32")
    t.set_data_from_numpy(np.array([[1]], np.int32))
    return inputs + [t]


def test_single_pass_is_one_detector_input_with_the_letterbox_reach(client, triton, shared_data):
    """SINGLE_PASS: a 12 MP group photo whose small faces send it through tiles by default is one
    detector input when asked; it still finds the faces the letterbox can see, with the same
    boxes and embeddings as the default's (both from phase 1's reduced decode)."""
    rng = np.random.default_rng(13)
    sources, backgrounds = group_photos.load_sources(shared_data), group_photos.load_backgrounds(shared_data)
    photo = group_photos.scattered(sources, backgrounds, 4000, 3000, [32, 48, 300], 18, rng, "mixed_12mp")
    big = photo.sizes >= 250  # 36 px in the letterbox: found by it, and close enough to its floor
    # (COARSE_FACE) that the default goes on to the tiles
    assert big.any() and (~big).sum() >= 6

    before = _detector_counts(triton.metrics_url)
    default = analyze(client, photo.jpeg)
    middle = _detector_counts(triton.metrics_url)
    res = client.infer(C.PIPELINE, _single_pass(photo.jpeg),
                       outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS])
    after = _detector_counts(triton.metrics_url)
    one = {n: res.as_numpy(n)[0] for n in OUTPUTS}

    assert middle[0] - before[0] > 10, "the default tiled the photo"
    assert after[0] - middle[0] == 1, "one detector input: the letterbox"
    truth_big = photo.boxes[big].tolist()
    assert len(metrics.match_pairs(truth_big, one[C.PL_BOXES].tolist())) == len(truth_big)
    assert len(metrics.match_pairs(photo.boxes.tolist(), default[C.PL_BOXES].tolist())) > len(truth_big)
    assert len(one[C.PL_BOXES]) < len(default[C.PL_BOXES])
    for box, emb in zip(one[C.PL_BOXES], one[C.PL_EMBEDDINGS]):
        k = int(np.argmax([metrics.iou(box, b) for b in default[C.PL_BOXES]]))
        assert metrics.iou(box, default[C.PL_BOXES][k]) >= 0.9
        assert float(emb @ default[C.PL_EMBEDDINGS][k]) >= 0.95


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
    """The photos of one person: the default stops after the letterbox pass (their faces are far
    above COARSE_FACE) with the same one face, bit for bit where the JPEG is decoded at full size
    (every photo under 1920 px); the plan asked for by a request gives the same face and gender."""
    paths = sorted((shared_data / "age_gender" / "images").glob("*"))
    assert len(paths) >= 9
    for path in paths:
        data = path.read_bytes()
        ref_boxes, ref_emb, ref_male = letterbox_only(data)
        default = analyze(client, data)
        assert len(default[C.PL_BOXES]) == len(ref_boxes) == 1, path.name
        w, h = default[C.PL_IMAGE_SIZE]
        if max(w, h) < 1920:  # decoded at full size: that very pass
            assert np.allclose(default[C.PL_BOXES], ref_boxes, atol=1e-3), path.name
            assert float(default[C.PL_EMBEDDINGS][0] @ ref_emb[0]) > 0.999, path.name
        else:  # biden.jpg (2204 px): decoded at 1/2, the letterbox still at full quality
            assert metrics.iou(default[C.PL_BOXES][0], ref_boxes[0]) >= 0.95, path.name
            assert float(default[C.PL_EMBEDDINGS][0] @ ref_emb[0]) >= 0.9, path.name
        out = analyze_small(client, data)
        assert len(out[C.PL_BOXES]) == 1, path.name
        assert metrics.iou(out[C.PL_BOXES][0], ref_boxes[0]) >= 0.85, path.name
        assert (out[C.PL_GENDER][0][1] >= 0.5) == (ref_male[0] >= 0.5), path.name
        assert float(out[C.PL_EMBEDDINGS][0] @ ref_emb[0]) >= 0.8, path.name


def test_small_faces_benchmark_driver_measures_both_photo_sets(triton, built_models, shared_data, tmp_path):
    from loadtests import small_faces_benchmark

    r = small_faces_benchmark.run(1.0, tmp_path, triton.grpc_url, triton.metrics_url,
                                  built_models[C.DETECTOR], built_models[C.MULTITASK], peers=None,
                                  data=shared_data, group_seconds=1.0, light=True)
    for cls in ("original", "12MP"):
        one = r["one_face"][cls]
        for part in (one["inprocess_before"], one["inprocess_after"], one["triton_after"]):
            assert part["images"] > 0 and part["images_per_s"] > 0
        assert one["triton_after"]["errors"] == 0
    for part in (r["group"]["inprocess"], r["group"]["triton"]):
        assert part["images"] > 0 and part["images_per_s"] > 0
    (name, pasted), = r["group"]["photos"].items()
    assert r["group"]["triton"]["errors"] == 0
    assert r["group"]["found_by_us"][name] >= 0.8 * pasted
    text = (tmp_path / "small_faces.md").read_text()
    assert "| group photos: Triton c4, default |" in text and "one-face 12MP: in process, after" in text


def test_the_benchmark_baseline_repository_turns_the_plan_off(triton, tmp_path):
    from export import triton_config
    from loadtests.small_faces_benchmark import baseline_repository

    copy = baseline_repository(triton.repository, tmp_path / "before")
    params = triton_config.parse_pbtxt((copy / C.PIPELINE / "config.pbtxt").read_text()).parameters
    assert params["min_face_size"].string_value == "0"
    original = triton_config.parse_pbtxt((triton.repository / C.PIPELINE / "config.pbtxt").read_text()).parameters
    assert original["min_face_size"].string_value == str(MIN_FACE_SIZE), "the default is the plan"
