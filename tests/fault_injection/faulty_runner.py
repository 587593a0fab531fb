"""Test-only face_detector: the real onnx_runner (copied beside this file as onnx_runner.py by
tests/integration/test_pipeline_faults.py), except that an execution whose batch holds a window
painted MARK fails for every request in it, as a sub-model that breaks on one input takes its
batch-mates down with it. face_pipeline must then fail only the photo that carried the mark."""

import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))

from onnx_runner import TritonPythonModel as Runner  # noqa: E402

MARK = np.array([7, 201, 7], np.uint8)  # the same in RGB and BGR
FAULT = "injected fault: a marked window in this batch"


def marked(windows: np.ndarray) -> bool:
    return bool((windows == MARK).all(axis=-1).mean(axis=(1, 2)).max() > 0.2)


class TritonPythonModel(Runner):
    def execute(self, requests):
        if any(marked(pb_utils.get_input_tensor_by_name(r, self.inputs[0]).as_numpy()) for r in requests):
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(FAULT)) for _ in requests]
        return super().execute(requests)
