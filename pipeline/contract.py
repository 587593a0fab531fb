"""Names and shapes shared by the Triton models, the exporter and the API client.

One place, so that `api/inference.py`, `triton_models/face_pipeline` and `export/` can never
disagree about a tensor name or the geometry of a face chip.
"""

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
MT_EMBEDDING = "embedding"  # FP32 [N,128], L2-normalised
MT_AGE = "age"  # FP32 [N,1], years
MT_GENDER = "gender"  # FP32 [N,2], probabilities (female, male)
GENDER_LABELS = ("female", "male")  # the columns of MT_GENDER and PL_GENDER
EMBEDDING_DIM = 128

# --- face_pipeline (BLS, python backend): one encoded photo in, every face out ---
# Inputs (max_batch_size 0):
PL_IMAGE = "IMAGE"  # BYTES [1], the encoded file (JPEG/PNG/WebP/BMP/TIFF/GIF)
PL_MIN_FACE_SIZE = "MIN_FACE_SIZE"  # INT32 [1], optional, pixels of the original image
PL_MAX_FACES = "MAX_FACES"  # INT32 [1], optional, 0 = all; keeps the largest faces
# INT32 [1], optional: the face_multitask version to embed with (the API asks for the version
# its gallery is in); 0 or absent: the pipeline's default (the published production version)
PL_MULTITASK_VERSION = "MULTITASK_VERSION"
# Outputs, one row per face, largest face first:
PL_BOXES = "BOXES"  # FP32 [K,4] x1,y1,x2,y2 in pixels of the upright (EXIF-applied) image, clipped
PL_SCORES = "SCORES"  # FP32 [K]
PL_LANDMARKS = "LANDMARKS"  # FP32 [K,5,2] original pixels: eye L, eye R, nose, mouth L, mouth R
PL_EMBEDDINGS = "EMBEDDINGS"  # FP32 [K,128] L2-normalised
PL_AGE = "AGE"  # FP32 [K] years
PL_GENDER = "GENDER"  # FP32 [K,2] (female, male)
PL_CHIPS = "CHIPS"  # UINT8 [K,CHIP_SIZE,CHIP_SIZE,3] RGB aligned canvas (stored for re-embedding)
PL_IMAGE_SIZE = "IMAGE_SIZE"  # INT32 [2] width, height of the upright image
# and output PL_MULTITASK_VERSION, INT32 [1]: the face_multitask version that made EMBEDDINGS.
# Every BLS call to face_multitask names its version, so this is the version that ran, not a guess.
# face_pipeline batches whole requests (max_batch_size > 0), so every input and output above
# carries a leading batch dimension of 1 on the wire: IMAGE [1,1], BOXES [1,K,4], ...



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
