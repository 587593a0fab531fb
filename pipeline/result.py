"""The one result type of both execution backends (Triton's face_pipeline through
api.inference, and the in-process onnxruntime pipeline): an `Analysis` of `Face`s, built from
face_pipeline's outputs by name (contract.FACE_OUTPUTS), never by position."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline import contract as C


@dataclass
class Face:
    box: np.ndarray  # x1, y1, x2, y2 in original pixels
    score: float
    embedding: np.ndarray  # L2-normalised float32
    age: float
    p_male: float
    chip: np.ndarray  # aligned RGB canvas, uint8
    landmarks: np.ndarray  # [5, 2] original pixels: eye L, eye R, nose, mouth L, mouth R

    @property
    def gender(self) -> str:
        return C.gender_of(self.p_male)[0]

    @property
    def gender_confidence(self) -> float:
        return C.gender_of(self.p_male)[1]

    @property
    def xywh(self) -> tuple[int, int, int, int]:
        """The contract's bbox: x, y, width, height in whole original pixels."""
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return round(x1), round(y1), round(x2 - x1), round(y2 - y1)


@dataclass
class Analysis:
    faces: list[Face]
    width: int
    height: int
    faces_limited_to: int | None = None  # set when the photo had more faces than max_faces
    # the face_multitask version that made the embeddings, as the pipeline reports it (it names
    # the version in every call it makes); embeddings of two versions are never compared
    model_version: str | None = None


def faces_to_ask(max_faces: int) -> int:
    """The MAX_FACES to send for a cap of `max_faces`: one more, so the extra face tells that the cap applied."""
    return max_faces + 1 if max_faces else 0


def analysis_of(out: Mapping[str, np.ndarray], max_faces: int = 0) -> Analysis:
    """One photo's face_pipeline outputs (without the batch dimension) as an Analysis; `max_faces`:
    the cap asked for with faces_to_ask (largest faces first). Without PL_MULTITASK_VERSION (the
    in-process pipeline) the model version is unknown (None)."""
    faces = [
        Face(box=out[C.PL_BOXES][i], score=float(out[C.PL_SCORES][i]),
             embedding=np.ascontiguousarray(out[C.PL_EMBEDDINGS][i], np.float32),
             age=float(out[C.PL_AGE][i]), p_male=float(out[C.PL_GENDER][i][C.GENDER_LABELS.index("male")]),
             chip=out[C.PL_CHIPS][i], landmarks=out[C.PL_LANDMARKS][i])
        for i in range(len(out[C.PL_BOXES]))
    ]
    w, h = (int(v) for v in out[C.PL_IMAGE_SIZE])
    made_by = int(out[C.PL_MULTITASK_VERSION].reshape(-1)[0]) if C.PL_MULTITASK_VERSION in out else 0
    model_version = str(made_by) if made_by > 0 else None
    if max_faces and len(faces) > max_faces:
        return Analysis(faces[:max_faces], w, h, faces_limited_to=max_faces, model_version=model_version)
    return Analysis(faces, w, h, model_version=model_version)
