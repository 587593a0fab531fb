"""The models' outputs as one table (pipeline/contract.py): the Triton configs are derived from
it, and both execution backends turn face_pipeline's outputs into an Analysis by name."""

from __future__ import annotations

import numpy as np

from export import triton_config as tc
from pipeline import contract as C
from pipeline.result import analysis_of, faces_to_ask

TYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8", "int32": "TYPE_INT32"}


def _table(outputs, leading=()):
    return [(o.name, TYPES[o.dtype], [*leading, *o.dims]) for o in outputs]


def _config(cfg):
    from tritonclient.grpc import model_config_pb2 as pb

    return [(o.name, pb.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output]


def test_the_triton_configs_are_the_table():
    multitask = tc.parse_pbtxt(tc.to_pbtxt(tc.multitask_config("cpu", 1, {})))
    assert _config(multitask) == _table(C.MULTITASK_OUTPUTS)
    pipeline = tc.parse_pbtxt(tc.to_pbtxt(tc.pipeline_config()))
    assert _config(pipeline) == _table(C.FACE_OUTPUTS, (-1,)) + _table(C.PHOTO_OUTPUTS)
    carried = {o.source for o in C.FACE_OUTPUTS if o.source}
    assert carried == {o.name for o in C.MULTITASK_OUTPUTS}  # every multitask head reaches the API


def _photo(k: int, rng):
    boxes = np.sort(rng.uniform(0, 500, (k, 4)), axis=1)
    multitask = {C.MT_EMBEDDING: rng.normal(size=(k, C.EMBEDDING_DIM)).astype(np.float32),
                 C.MT_AGE: rng.uniform(1, 90, (k, 1)).astype(np.float32),
                 C.MT_GENDER: np.tile(np.array([[0.2, 0.8]], np.float32), (k, 1))}
    rows = C.face_rows(boxes, rng.uniform(0.6, 1, k), rng.uniform(0, 500, (k, 10)),
                       np.zeros((k, C.CHIP_SIZE, C.CHIP_SIZE, 3), np.uint8), multitask)
    return boxes, multitask, rows


def test_face_rows_follow_the_table_and_faces_are_read_by_name():
    rng = np.random.default_rng(0)
    boxes, multitask, rows = _photo(3, rng)
    for o in C.FACE_OUTPUTS:
        assert rows[o.name].dtype == np.dtype(o.dtype) and rows[o.name].shape == (3, *o.dims), o.name
    rows[C.PL_IMAGE_SIZE] = np.array([640, 480], np.int32)
    analysis = analysis_of(dict(reversed(list(rows.items()))))  # the order of the outputs is irrelevant
    assert (analysis.width, analysis.height, len(analysis.faces)) == (640, 480, 3)
    face = analysis.faces[1]
    assert np.allclose(face.box, boxes[1]) and face.landmarks.shape == (5, 2)
    assert np.array_equal(face.embedding, multitask[C.MT_EMBEDDING][1])
    assert face.age == float(multitask[C.MT_AGE][1, 0]) and face.gender == "male"


def test_a_face_cap_is_reported_when_it_applied():
    rng = np.random.default_rng(1)
    _, _, rows = _photo(faces_to_ask(2), rng)  # the backend found one more than the cap
    rows[C.PL_IMAGE_SIZE] = np.array([10, 10], np.int32)
    capped = analysis_of(rows, max_faces=2)
    assert len(capped.faces) == 2 and capped.faces_limited_to == 2
    assert analysis_of(rows, max_faces=3).faces_limited_to is None
    assert capped.model_version is None  # the in-process pipeline reports no version
    rows[C.PL_MULTITASK_VERSION] = np.array([3], np.int32)
    assert analysis_of(rows).model_version == "3"
    assert faces_to_ask(0) == 0


def test_no_faces_keep_their_shapes():
    empty = C.face_rows(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)),
                        np.zeros((0, C.CHIP_SIZE, C.CHIP_SIZE, 3), np.uint8), C.no_multitask_rows())
    assert {n: a.shape for n, a in empty.items()} == {o.name: (0, *o.dims) for o in C.FACE_OUTPUTS}
