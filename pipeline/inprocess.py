"""The whole face pipeline in this process with onnxruntime: the floor for benchmarks and
the reference the Triton pipeline is compared with. Same functions as face_pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline import contract as C
from pipeline.analysis import detect, faces, open_photo
from pipeline.detect import MIN_FACE_SIZE, SCORE_THRESHOLD


class InProcessPipeline:
    def __init__(self, detector_onnx: Path, multitask_onnx: Path, detector_size: int = C.DETECTOR_SIZE,
                 threads: int | None = None, score_threshold: float = SCORE_THRESHOLD,
                 min_face_promise: int = MIN_FACE_SIZE, detector_batch: int = 8):
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.detector = ort.InferenceSession(str(detector_onnx), opts, providers=providers)
        self.multitask = ort.InferenceSession(str(multitask_onnx), opts, providers=providers)
        self.size = detector_size
        self.score_threshold = score_threshold
        self.promise, self.batch = min_face_promise, detector_batch
        self.passes = 0  # detector phases of the last photo analysed

    def analyze(self, data: bytes, min_face_size: int = 0, max_faces: int = 0) -> dict[str, np.ndarray]:
        photo = open_photo(data, min_face_size=min_face_size, max_faces=max_faces,
                           promise=self.promise, size=self.size)
        detect([photo], self.batch, lambda batch: self.detector.run(None, {C.DET_INPUT: batch}),
               self.score_threshold)
        self.passes = photo.passes  # 1: the letterbox answered alone; 2: the rest of the plan ran too
        boxes, scores, landmarks, chips = faces(photo, self.score_threshold)
        w, h = photo.size
        if len(chips):
            emb, age, gender = self.multitask.run(None, {C.MT_INPUT: chips})
        else:
            emb = np.zeros((0, C.EMBEDDING_DIM), np.float32)
            age, gender = np.zeros((0, 1), np.float32), np.zeros((0, 2), np.float32)
        return {
            C.PL_BOXES: boxes, C.PL_SCORES: scores, C.PL_LANDMARKS: landmarks,
            C.PL_EMBEDDINGS: emb, C.PL_AGE: age.reshape(-1), C.PL_GENDER: gender,
            C.PL_CHIPS: chips, C.PL_IMAGE_SIZE: np.array([w, h], np.int32),
        }
