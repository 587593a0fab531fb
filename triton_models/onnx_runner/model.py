"""Triton python-backend model that runs one ONNX file with onnxruntime.

The CPU build of Triton we can run here (nvidia-pytriton wheel) has only the python backend,
so each ONNX model is wrapped by this file. The dynamic batcher hands `execute` several
requests at once; we concatenate them along dim 0, run the session once and split the
outputs again, which is where the batching gain comes from. In production the same ONNX
file runs under the onnxruntime backend instead (config written by `export publish --target gpu`).
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"],
                            params.get("onnx_file", "model.onnx"))
        opts = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # several model processes share two cores: idle ORT threads must sleep, not spin
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        """One response per request, in order. Requests are run together only when their inputs
        have the same shape: Triton's dynamic batcher may hand over requests of different
        shapes (a 480 letterbox beside 640 tiles was seen under load), which cannot be stacked."""
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
                 for r in requests]
        groups: dict[tuple, list[int]] = {}
        for i, feed in enumerate(feeds):
            groups.setdefault(tuple(feed[n].shape[1:] for n in self.inputs), []).append(i)
        responses = [None] * len(requests)
        for members in groups.values():
            for i, response in zip(members, self._run([feeds[i] for i in members])):
                responses[i] = response
        return responses

    def _run(self, feeds):
        sizes = [len(f[self.inputs[0]]) for f in feeds]
        batch = {n: (feeds[0][n] if len(feeds) == 1 else np.concatenate([f[n] for f in feeds]))
                 for n in self.inputs}
        try:
            results = self.session.run(self.outputs, batch)
        except Exception as exc:  # surface ORT errors as Triton errors, not a dead stub
            err = pb_utils.TritonError(f"onnxruntime failed: {exc}")
            return [pb_utils.InferenceResponse(error=err) for _ in feeds]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + n]))
                       for name, out in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
