"""Names and shapes shared by the Triton models, the exporter and the API client.

One place, so that `api/inference.py`, `triton_models/face_pipeline` and `export/` can never
disagree about a tensor name or the geometry of a face chip. The models' outputs are tables
(MULTITASK_OUTPUTS, FACE_OUTPUTS, PHOTO_OUTPUTS): name, dtype, shape and meaning, which every
layer reads.
"""

from dataclasses import dataclass

import numpy as np

# --- registered model names (MLflow registry name == Triton model name) ---
DETECTOR = "face_detector"
MULTITASK = "face_multitask"
PIPELINE = "face_pipeline"

# --- face_detector (RetinaFace-MobileNet0.25) ---
DET_INPUT = "input"  # UINT8 [N,S,S,3] RGB, S = DETECTOR_SIZE (letterboxed); the graph normalises
DET_OUTPUTS = ("loc", "conf", "landmarks")  # [N,A,4], [N,A,2] (softmax, col 1 = face), [N,A,10]
DETECTOR_SIZE = 480  # letterbox side: same recall as 640 on ../shared/data at half the cost (README)
DET_MEAN_BGR = (104.0, 117.0, 123.0)

# --- face_multitask (SFace embedding + age + gender in one graph) ---
# Input is an aligned RGB canvas of CHIP_SIZE x CHIP_SIZE pixels, 0..255 float. The 112x112
# ArcFace template sits at offset CHIP_OFFSET; the margin lets the graph cut the wider
# age/gender crops from the same canvas without running out of pixels.
CHIP_SIZE = 144
CHIP_OFFSET = (CHIP_SIZE - 112) // 2
ARCFACE_TEMPLATE = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
MT_INPUT = "chips"  # UINT8 [N,CHIP_SIZE,CHIP_SIZE,3] RGB; the graph normalises
MT_EMBEDDING = "embedding"
MT_AGE = "age"
MT_GENDER = "gender"
GENDER_LABELS = ("female", "male")  # the columns of MT_GENDER and PL_GENDER
EMBEDDING_DIM = 128


@dataclass(frozen=True)
class Output:
    """One output tensor: its name, numpy dtype, the shape of one face's row (the face or batch
    dimension comes first on the wire) and what it means. `source`: the face_multitask output a
    face_pipeline output carries, reshaped to `dims`."""
    name: str
    dtype: str
    dims: tuple[int, ...]
    meaning: str
    source: str | None = None


# face_multitask's outputs, one row per chip; export/convert builds one head per entry and
# export/triton_config, face_pipeline and the in-process pipeline read this table.
MULTITASK_OUTPUTS = (
    Output(MT_EMBEDDING, "float32", (EMBEDDING_DIM,), "SFace embedding, L2-normalised"),
    Output(MT_AGE, "float32", (1,), "age in years"),
    Output(MT_GENDER, "float32", (2,), "probabilities (female, male), calibrated"),
)

# --- face_pipeline (BLS, python backend): one encoded photo in, every face out ---
# Inputs (max_batch_size 0):
PL_IMAGE = "IMAGE"  # BYTES [1], the encoded file (JPEG/PNG/WebP/BMP/TIFF/GIF)
PL_MIN_FACE_SIZE = "MIN_FACE_SIZE"  # INT32 [1], optional, pixels of the original image
PL_MAX_FACES = "MAX_FACES"  # INT32 [1], optional, 0 = all; keeps the largest faces
# INT32 [1], optional: 1 = the one letterbox pass of a reduced decode (faces from about 1/20 of
# the photo's long side, the reach of OpenCV's YuNet at 640 px), no small-face phase; 0/absent:
# the documented small-face promise (pipeline/detect.py)
PL_SINGLE_PASS = "SINGLE_PASS"
# INT32 [1], optional: the face_multitask version to embed with (the API asks for the version
# its gallery is in); 0 or absent: the pipeline's default (the published production version)
PL_MULTITASK_VERSION = "MULTITASK_VERSION"
PL_BOXES = "BOXES"
PL_SCORES = "SCORES"
PL_LANDMARKS = "LANDMARKS"
PL_EMBEDDINGS = "EMBEDDINGS"
PL_AGE = "AGE"
PL_GENDER = "GENDER"
PL_CHIPS = "CHIPS"
PL_IMAGE_SIZE = "IMAGE_SIZE"
# Outputs, one row per face [K, *dims], largest face first, then the photo's own. face_pipeline
# batches whole requests (max_batch_size > 0), so every input and output carries a leading
# batch dimension of 1 on the wire: IMAGE [1,1], BOXES [1,K,4], ...
FACE_OUTPUTS = (
    Output(PL_BOXES, "float32", (4,), "x1, y1, x2, y2 in pixels of the upright (EXIF-applied) image, clipped"),
    Output(PL_SCORES, "float32", (), "detection score"),
    Output(PL_LANDMARKS, "float32", (5, 2), "original pixels: eye L, eye R, nose, mouth L, mouth R"),
    Output(PL_EMBEDDINGS, "float32", (EMBEDDING_DIM,), "L2-normalised", source=MT_EMBEDDING),
    Output(PL_AGE, "float32", (), "years", source=MT_AGE),
    Output(PL_GENDER, "float32", (2,), "probabilities (female, male)", source=MT_GENDER),
    Output(PL_CHIPS, "uint8", (CHIP_SIZE, CHIP_SIZE, 3), "RGB aligned canvas (stored for re-embedding)"),
)
PHOTO_OUTPUTS = (
    Output(PL_IMAGE_SIZE, "int32", (2,), "width, height of the upright image"),
    # every BLS call to face_multitask names its version: the version that ran, not a guess
    Output(PL_MULTITASK_VERSION, "int32", (1,), "the face_multitask version that made EMBEDDINGS"),
)
PIPELINE_OUTPUTS = (*FACE_OUTPUTS, *PHOTO_OUTPUTS)


def no_multitask_rows() -> dict[str, np.ndarray]:
    """face_multitask's outputs for no chips at all."""
    return {o.name: np.zeros((0, *o.dims), o.dtype) for o in MULTITASK_OUTPUTS}


def face_rows(boxes, scores, landmarks, chips, multitask: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One photo's face_pipeline outputs by name, in the table's dtypes and shapes: the detection's
    own from its faces, the rest from face_multitask's rows for those faces."""
    detected = {PL_BOXES: boxes, PL_SCORES: scores, PL_LANDMARKS: landmarks, PL_CHIPS: chips}
    return {o.name: np.ascontiguousarray(multitask[o.source] if o.source else detected[o.name], o.dtype)
            .reshape(-1, *o.dims) for o in FACE_OUTPUTS}



def gender_of(p_male: float) -> tuple[str, float]:
    """The one gender rule: "male" from P(male) 0.5 up, else "female"; with the probability of
    the label given (the API's gender_confidence, never below 0.5)."""
    male = p_male >= 0.5
    return GENDER_LABELS[male], (p_male if male else 1.0 - p_male)


# Prefix of the Triton error message for bytes that are not a decodable image; the API maps
# it to 400 instead of 503.
INVALID_IMAGE_PREFIX = "invalid image: "
# Prefix of the error for a request whose face_multitask version is not served (unloaded, or
# not yet loaded on this replica); the API maps it to 503 gallery_reembedding.
VERSION_UNAVAILABLE_PREFIX = "face_multitask version unavailable: "
