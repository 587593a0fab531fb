"""face_pipeline: one encoded photo in, every face out (Triton python backend, BLS).

Why BLS and not an ensemble: one image yields 0..N faces, and an ensemble passes a single
batch dimension through every step. Here the dynamic batcher hands us up to
max_batch_size requests; we decode them, send ONE detector request for all of them and ONE
multitask request (chunked to its max batch) for all their faces, so Triton's dynamic
batching merges work across concurrent clients at both models.

Detection runs in two phases (pipeline/detect.py): every photo's letterbox first, batched
together; then, for the photos that need it, the rest of the plan (native pass or tiles). Those
windows go out as concurrent BLS requests of `detector_request_batch` inputs each, so Triton's
dynamic batcher merges them with each other and with other requests' inputs up to the detector's
max batch. A request cancelled by its client during phase 1 gets no phase 2.

The geometry (plan, letterbox, tiles, priors, NMS, alignment) lives in the `pipeline` package,
copied next to this file by `export publish`, so the in-process reference runs the same code.
"""

import asyncio
import json
import os
import sys

import cv2
import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))

from pipeline import contract as C  # noqa: E402
from pipeline.analysis import collect, detector_batches, faces, next_pass, open_photo  # noqa: E402
from pipeline.decode import ImageDecodeError  # noqa: E402
from pipeline.detect import MIN_FACE_SIZE, SCORE_THRESHOLD, TILE  # noqa: E402
from pipeline.limits import DecodeLimits  # noqa: E402


def _optional_int(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return 0 if t is None else int(t.as_numpy().reshape(-1)[0])


def _cancelled(request):
    try:
        return request.is_cancelled()
    except Exception:  # noqa: BLE001 - a backend without cancellation support
        return False


def _overloaded(exc):
    """A sub-model refused for load (queue full or timed out): every request shares that fate."""
    text = str(exc).lower()
    return "queue" in text or "timeout" in text or "timed out" in text


def _error(message, code=None):
    try:
        err = pb_utils.TritonError(message, getattr(pb_utils.TritonError, code)) if code else pb_utils.TritonError(message)
    except (AttributeError, TypeError):
        err = pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(error=err)


class VersionUnavailable(Exception):
    """The face_multitask version a request names is not served here."""


def _version_missing(message):
    # Triton 2.51 answers a call pinned to an unloaded version "Model 'face_multitask' is not ready."
    text = message.lower()
    return any(w in text for w in ("not ready", "not found", "unavailable", "unknown model"))


async def _bls(model, inputs, output_names, version=-1):
    # CPU outputs: a KIND_GPU onnxruntime model otherwise answers in GPU memory, where
    # as_numpy() raises "Tensor is stored in GPU and cannot be converted to NumPy"
    req = pb_utils.InferenceRequest(
        model_name=model, inputs=inputs, requested_output_names=list(output_names), model_version=version,
        preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0))
    resp = await req.async_exec()
    if resp.has_error():
        message = resp.error().message()
        if version > 0 and _version_missing(message):
            raise VersionUnavailable(f"{C.VERSION_UNAVAILABLE_PREFIX}{model} v{version}: {message}")
        raise pb_utils.TritonModelException(f"{model}: {message}")
    return [pb_utils.get_output_tensor_by_name(resp, n).as_numpy() for n in output_names]


class TritonPythonModel:
    def initialize(self, args):
        # several pipeline instances share two cores with the models: OpenCV's own thread
        # pool in every one of them only adds contention
        cv2.setNumThreads(1)
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.detector = params.get("detector_model", C.DETECTOR)
        self.multitask = params.get("multitask_model", C.MULTITASK)
        # the version a request gets when it names none (publish writes @production's here)
        self.multitask_version = int(params.get("multitask_version", "0") or 0)
        self.size = int(params.get("detector_size", C.DETECTOR_SIZE))
        self.score_threshold = float(params.get("score_threshold", SCORE_THRESHOLD))
        # the API's upload limits, written here by `export publish` (one setting, two enforcers)
        self.decode_limits = DecodeLimits.from_params(params)
        self.multitask_batch = int(params.get("multitask_max_batch", "32"))
        # the documented smallest face (px of the original photo) the detection plan covers
        self.min_face = int(params.get("min_face_size", str(MIN_FACE_SIZE)))
        self.tile = int(params.get("tile_size", str(TILE)))
        self.det_request_batch = int(params.get("detector_request_batch", "4"))
        self.det_inflight = int(params.get("detector_requests_in_flight", "4"))

    async def execute(self, requests):
        """Each request succeeds or fails on its own: a corrupt image, a decode that runs out of
        memory, or a sub-model call that fails for the batch never costs the others their answer.
        A request its client cancelled (the API gave up: timeout or disconnect) stops where it
        is: it is checked before decoding, before each detector call and before face_multitask.

        Invariant (Triton's python backend contract, as in its add_sub and bls examples): exactly
        one response per request, in the order of `requests`; a failed request gets an error
        response in its own slot, never a missing or shifted one."""
        responses = [None] * len(requests)
        photos, jobs = [], []
        for i, request in enumerate(requests):
            if _cancelled(request):  # the client gave up while this waited in the queue
                responses[i] = _error("cancelled by the client", "CANCELLED")
                continue
            data = pb_utils.get_input_tensor_by_name(request, C.PL_IMAGE).as_numpy().reshape(-1)[0]
            try:
                photo = open_photo(bytes(data), self.decode_limits,
                                   min_face_size=_optional_int(request, C.PL_MIN_FACE_SIZE),
                                   max_faces=_optional_int(request, C.PL_MAX_FACES),
                                   promise=self.min_face, size=self.size, tile=self.tile,
                                   single_pass=bool(_optional_int(request, C.PL_SINGLE_PASS)))
            except ImageDecodeError as exc:
                responses[i] = _error(C.INVALID_IMAGE_PREFIX + str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. MemoryError: this request only
                responses[i] = _error(f"decoding failed: {type(exc).__name__}")
                continue
            # asked for: that version or an error; not asked for: the default, falling back to
            # Triton's choice (reported as 0, "not known") while a publish replaces the default
            asked = _optional_int(request, C.PL_MULTITASK_VERSION)
            photo.multitask_version, photo.version_fallback = asked or self.multitask_version, not asked
            photos.append(photo)
            jobs.append(i)
        owner = {id(p): requests[i] for p, i in zip(photos, jobs)}

        def gone(photo):
            return _cancelled(owner[id(photo)])

        if jobs:
            try:
                outs = await self._analyze(photos, gone)
            except Exception as batch_exc:  # noqa: BLE001 - find the culprit: each request on its own
                outs = []
                for photo in photos:
                    photo.restart()  # drop what the failed batch collected: phase 1 again
                    if len(photos) == 1 or _overloaded(batch_exc) and not isinstance(batch_exc, VersionUnavailable):
                        outs.append(batch_exc)  # nobody to single out, or retrying adds to the load
                        continue
                    try:
                        outs.append((await self._analyze([photo], gone))[0])
                    except Exception as exc:  # noqa: BLE001
                        outs.append(exc)
            for i, out in zip(jobs, outs):
                responses[i] = (_error("cancelled by the client", "CANCELLED") if out is None
                                else _error(str(out) or f"decoding failed: {type(out).__name__}")
                                if isinstance(out, Exception)
                                else pb_utils.InferenceResponse(output_tensors=out))
        return responses

    async def _detect(self, photos, gone):
        """Phase 1 (the letterbox) of every photo, then phase 2 for the photos that need it and
        whose client still waits (pipeline.analysis.next_pass; a photo whose phase-2 decode
        failed carries its error and drops out)."""
        todo = photos
        while todo:
            await self._windows(todo, gone)
            todo = [photo for photo in next_pass(todo, self.score_threshold) if not gone(photo)]

    async def _windows(self, photos, gone):
        """The current phase's windows of every photo through the detector: small concurrent
        requests, at most `det_inflight` built and outstanding at a time (tiles of a 40 MP photo
        are not all held). Windows of a photo whose request was cancelled are not sent."""
        pending = set()
        failure = None
        dropped = set()

        async def one(batch, owners):
            out = await _bls(self.detector, [pb_utils.Tensor(C.DET_INPUT, batch)], C.DET_OUTPUTS)
            collect(owners, *out, self.score_threshold)

        for batch, owners in detector_batches(photos, self.det_request_batch):
            if len(pending) >= self.det_inflight:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failure = failure or next((t.exception() for t in done if t.exception()), None)
            for photo in {id(p): p for p, _ in owners}.values():  # one check per photo and call
                if id(photo) not in dropped and gone(photo):
                    dropped.add(id(photo))
            keep = [k for k, (photo, _) in enumerate(owners) if id(photo) not in dropped]
            if not keep:
                continue
            if len(keep) < len(owners):
                batch, owners = np.ascontiguousarray(batch[keep]), [owners[k] for k in keep]
            pending.add(asyncio.ensure_future(one(batch, owners)))
        if pending:
            done, _ = await asyncio.wait(pending)
            failure = failure or next((t.exception() for t in done if t.exception()), None)
        if failure is not None:
            raise failure

    async def _analyze(self, photos, gone):
        """Outputs per photo, None for a photo whose request was cancelled on the way, the
        exception of a photo whose phase-2 decode failed (that request alone fails)."""
        await self._detect(photos, gone)
        live = [not gone(photo) for photo in photos]
        kept, per_image, chips = [], [], []
        for photo, alive in zip(photos, live):
            if not alive or photo.error is not None:
                continue
            boxes, scores, landmarks, crops = faces(photo, self.score_threshold)
            w, h = photo.size
            kept.append(photo)
            per_image.append((boxes, scores, landmarks, crops, w, h))
            chips.append(crops)

        # one multitask call per version the batch's requests ask for (nearly always one)
        per_version = {}
        for k, photo in enumerate(kept):
            per_version.setdefault(photo.multitask_version, []).append(k)
        results = [None] * len(kept)
        for version, members in per_version.items():
            part = np.concatenate([chips[k] for k in members])
            try:
                rows = await self._multitask(part, version)
            except VersionUnavailable:
                if not all(kept[k].version_fallback for k in members):
                    raise
                rows = await self._multitask(part, 0)
                for k in members:
                    kept[k].multitask_version = 0
            start = 0
            for k in members:
                end = start + len(chips[k])
                results[k] = {name: a[start:end] for name, a in rows.items()}
                start = end

        outputs = []
        for photo, (boxes, scores, landmarks, crops, w, h), rows in zip(kept, per_image, results):
            tensors = C.face_rows(boxes, scores, landmarks, crops, rows)
            out = [pb_utils.Tensor(n, a[None]) for n, a in tensors.items()]
            out.append(pb_utils.Tensor(C.PL_IMAGE_SIZE, np.array([[w, h]], np.int32)))
            out.append(pb_utils.Tensor(C.PL_MULTITASK_VERSION, np.array([[photo.multitask_version]], np.int32)))
            outputs.append(out)
        it = iter(outputs)
        return [None if not alive else photo.error if photo.error is not None else next(it)
                for photo, alive in zip(photos, live)]

    async def _multitask(self, chips, version):
        """face_multitask's outputs (contract.MULTITASK_OUTPUTS) for `chips`, by name, from
        `version` (> 0: named in every call, so the version that answered is the one reported;
        0: Triton's choice, only for a repository written without a default)."""
        n = len(chips)
        if n == 0:
            return C.no_multitask_rows()
        names = [o.name for o in C.MULTITASK_OUTPUTS]
        parts = await asyncio.gather(*(
            _bls(self.multitask, [pb_utils.Tensor(C.MT_INPUT, np.ascontiguousarray(chips[s:s + self.multitask_batch]))],
                 names, version or -1)
            for s in range(0, n, self.multitask_batch)))
        return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}
