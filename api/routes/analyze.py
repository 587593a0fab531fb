"""POST /analyze: every face with box, confidence, age, gender and identity; POST /analyze/batch:
several photos in one request, one result each, in order."""

from __future__ import annotations

import asyncio

from typing import Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile

from api import metrics
from api.admission import hold_for_images
from api.deps import IdentityDep, InferenceDep, SettingsDep
from api.errors import ApiError, ClientGone, InvalidField, MissingField, UnsupportedMediaType
from api.face_view import face_out, quality
from api.image_input import decode_base64_image, image_bytes, is_json, json_body, json_request_body
from api.identity import IdentityService
from api.inference import Analysis, InferenceClient
from api.request_options import AnalyzeOptions, analyze_options
from api.schemas import AnalyzeResponse, BatchItemError, BatchResponse
from api.uploads import read_image

router = APIRouter()

Mode = Literal["track", "search", "detect"]
MODE_HELP = ("track (default): match, remember new faces as unknown people, count and record the "
             "detection (the API contract). search: match against the gallery, write nothing; a face "
             "nobody matches has person_id null. detect: faces and attributes only, no matching, no writes.")

IMAGE_HELP = ("JPEG, PNG, WebP, BMP, TIFF or GIF; or send the file itself as the body (Content-Type image/jpeg, "
              "image/png, ... or application/octet-stream: the cheapest for the server), or application/json "
              "{\"image\": \"<base64>\"}")
JSON_EXAMPLE = {"image": "/9j/4AAQSkZJRgABAQAAAQABAAD..."}


async def infer(inference: InferenceClient, data: bytes, options: AnalyzeOptions,
                version: str | None = None) -> Analysis:
    analysis = await inference.analyze(data, options.min_face_size, options.max_faces, version,
                                       small_faces=options.small_faces)
    if options.min_confidence:
        analysis.faces = [f for f in analysis.faces if f.score >= options.min_confidence]
    return analysis


def check_mode(options: AnalyzeOptions, mode: str) -> None:
    """Options that need matching, refused before any work is done."""
    if options.candidates and mode == "detect":
        raise InvalidField("candidates needs matching: use it with mode=track or mode=search")


async def respond(identity: IdentityService, gate: float, analysis: Analysis, options: AnalyzeOptions,
                  mode: str = "track") -> AnalyzeResponse:
    """Match, remember and shape one photo's faces (the quality gate decides who is remembered)."""
    metrics.FACES.observe(len(analysis.faces))
    qualities = [quality(f) for f in analysis.faces]
    identified = await identity.identify(analysis, mode, options.threshold, [q.overall >= gate for q in qualities],
                                           options.candidates)
    faces = [face_out(r, q, gate, options.include) for r, q in zip(identified, qualities)]
    message = f"Successfully analyzed {len(faces)} face(s)" if faces else "No faces detected in the image"
    if analysis.faces_limited_to:
        message += f" (the {analysis.faces_limited_to} largest; more were detected)"
    return AnalyzeResponse(faces=faces, message=message, faces_limited_to=analysis.faces_limited_to,
                           image={"width": analysis.width, "height": analysis.height})


@router.post("/analyze", response_model=AnalyzeResponse, summary="Analyse every face in a photo",
             openapi_extra=json_request_body(JSON_EXAMPLE, [], raw=True))
async def analyze(request: Request, settings: SettingsDep, inference: InferenceDep, identity: IdentityDep,
                  file: UploadFile | None = File(None, description=IMAGE_HELP),
                  options: AnalyzeOptions = Depends(analyze_options), mode: Mode = Query("track", description=MODE_HELP)):
    check_mode(options, mode)
    data = await image_bytes(request, file, settings.upload, url_settings=settings.url_fetch,
                             raw=True)  # or the photo as the body itself
    if mode == "detect":  # no identity: whichever version the pipeline embeds with
        return await respond(identity, settings.quality.min_score, await infer(inference, data, options), options, mode)

    async def work(version):
        analysis = await infer(inference, data, options, version)
        return await respond(identity, settings.quality.min_score, analysis, options, mode)
    return await identity.in_gallery_version(work)


BATCH_HELP = """Up to FA_LIMITS_BATCH_MAX_IMAGES photos (16 by default): multipart parts named `files`, or
application/json `{"images": ["<base64>", ...]}`. `results` has one entry per photo, in order: the
/analyze response, or `{"success": false, "error", "message"}` for a photo that could not be read.
The photos go to Triton concurrently, so its dynamic batcher runs them together; each photo's
identities are then written in its own transaction, in order. If Triton or the database is down,
the whole request is a 503. A batch takes one of the worker's admission slots per photo, so when
the service is busy it is refused (503 overloaded, Retry-After) as that many /analyze requests
would be."""


@router.post("/analyze/batch", response_model=BatchResponse, summary="Analyse several photos in one request",
             description=BATCH_HELP,
             openapi_extra={"requestBody": {"content": {"application/json": {
                 "schema": {"type": "object", "required": ["images"], "properties": {"images": {
                     "type": "array", "items": {"type": "string", "format": "byte"},
                     "description": "image files, base64"}}},
                 "example": {"images": ["/9j/4AAQSkZJRgABAQAAAQABAAD...", "iVBORw0KGgoAAAANSUhEUgAA..."]}}}}})
async def analyze_batch(request: Request, settings: SettingsDep, inference: InferenceDep, identity: IdentityDep,
                        files: list[UploadFile] | None = File(None, description="the photos, in order"),
                        options: AnalyzeOptions = Depends(analyze_options),
                        mode: Mode = Query("track", description=MODE_HELP)):
    check_mode(options, mode)
    limit = settings.limits.batch_max_images
    if files:
        sources = [("file", f) for f in files]
    elif is_json(request):
        images = (await json_body(request)).get("images")
        if not isinstance(images, list) or not images:
            raise InvalidField('images: required, a non-empty list of base64 strings')
        sources = [("base64", v) for v in images]
    elif request.headers.get("content-type", "").startswith(("multipart/", "application/x-www-form-urlencoded")) \
            or not request.headers.get("content-type"):
        raise MissingField("files: Field required (one multipart part per photo)")
    else:
        raise UnsupportedMediaType('send multipart/form-data parts "files" or application/json {"images": [...]}')
    if len(sources) > limit:
        raise InvalidField(f"at most {limit} images per batch (got {len(sources)})")
    # one admission slot per image, like as many /analyze requests (503 overloaded if they do not
    # come in time); a batch larger than the worker's whole share runs that many at a time
    in_flight = asyncio.Semaphore(await hold_for_images(request.scope, len(sources)))

    async def prepare(kind, value) -> bytes | ApiError:
        try:
            if kind == "file":
                return await read_image(value, settings.upload)
            return await decode_base64_image(value, settings.upload, "images[]")
        except ApiError as exc:
            if exc.status >= 500:
                raise
            return exc

    # one version for the whole batch: the gallery's (no retry here: earlier photos are written)
    version = None if mode == "detect" else identity.gallery_version

    async def run(item):
        if isinstance(item, ApiError):
            return item
        try:
            async with in_flight:
                return await infer(inference, item, options, version)
        except ApiError as exc:
            if exc.status >= 500 or isinstance(exc, ClientGone):
                raise
            return exc

    datas = [await prepare(kind, value) for kind, value in sources]
    analyses = await asyncio.gather(*(run(d) for d in datas))  # concurrent: Triton batches them
    results = []
    for a in analyses:
        if isinstance(a, ApiError):
            results.append(BatchItemError(error=a.code, message=a.message))
        else:
            results.append(await respond(identity, settings.quality.min_score, a, options, mode))
    ok = sum(1 for r in results if r.success)
    return BatchResponse(results=results, message=f"Analyzed {ok} of {len(results)} image(s)")
