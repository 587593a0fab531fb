"""The whole face pipeline in this process with onnxruntime: the floor for benchmarks and
the reference the Triton pipeline is compared with. Same functions as face_pipeline, and the
same result type as the Triton client (pipeline.result.Analysis)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline import contract as C
from pipeline.analysis import detect, faces, open_photo
from pipeline.detect import MIN_FACE_SIZE, SCORE_THRESHOLD
from pipeline.result import Analysis, analysis_of, faces_to_ask


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

    def analyze(self, data: bytes, min_face_size: int = 0, max_faces: int = 0,
                single_pass: bool = False) -> Analysis:
        """The same answer as api.inference.InferenceClient.analyze, computed in this process."""
        photo = open_photo(data, min_face_size=min_face_size, max_faces=faces_to_ask(max_faces),
                           promise=self.promise, size=self.size, single_pass=single_pass)
        detect([photo], self.batch, lambda batch: self.detector.run(None, {C.DET_INPUT: batch}),
               self.score_threshold)
        self.passes = photo.passes  # 1: the letterbox answered alone; 2: the rest of the plan ran too
        boxes, scores, landmarks, chips = faces(photo, self.score_threshold)
        rows = C.no_multitask_rows()
        if len(chips):
            names = [o.name for o in C.MULTITASK_OUTPUTS]
            rows = dict(zip(names, self.multitask.run(names, {C.MT_INPUT: chips})))
        out = C.face_rows(boxes, scores, landmarks, chips, rows)
        out[C.PL_IMAGE_SIZE] = np.array(photo.size, np.int32)
        return analysis_of(out, max_faces)
