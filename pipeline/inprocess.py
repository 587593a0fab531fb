"""The whole face pipeline in this process with onnxruntime: the floor for benchmarks and
the reference the Triton pipeline is compared with. Same functions as face_pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline import contract as C
from pipeline.align import face_chips
from pipeline.decode import decode_image
from pipeline.detect import SCORE_THRESHOLD, letterbox, postprocess


class InProcessPipeline:
    def __init__(self, detector_onnx: Path, multitask_onnx: Path, detector_size: int = C.DETECTOR_SIZE,
                 threads: int | None = None, score_threshold: float = SCORE_THRESHOLD):
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.detector = ort.InferenceSession(str(detector_onnx), opts, providers=providers)
        self.multitask = ort.InferenceSession(str(multitask_onnx), opts, providers=providers)
        self.size = detector_size
        self.score_threshold = score_threshold

    def analyze(self, data: bytes, min_face_size: int = 0, max_faces: int = 0) -> dict[str, np.ndarray]:
        rgb = decode_image(data)
        h, w = rgb.shape[:2]
        tensor, scale = letterbox(rgb, self.size)
        loc, conf, lmk = self.detector.run(None, {C.DET_INPUT: tensor[None]})
        boxes, scores, landmarks = postprocess(loc[0], conf[0], lmk[0], self.size, scale, w, h,
                                               score_threshold=self.score_threshold,
                                               min_face_size=min_face_size, max_faces=max_faces)
        chips = face_chips(rgb, landmarks)
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
