"""Where a request's photo comes from: a multipart `file` part; the raw body itself with
Content-Type image/* or application/octet-stream (/analyze: the cheapest upload, no form
parsing); or an application/json body `{"image": "<base64>"}` or, when enabled,
`{"url": "https://..."}` (api.url_fetch). Every way, the bytes go through the same upload
checks (api.uploads.check_image: size, magic bytes, pixel count) before anything reaches Triton."""

from __future__ import annotations

import base64
import binascii

from fastapi import Request, UploadFile

from api.errors import InvalidField, InvalidImage, MissingField, PayloadTooLarge, UnsupportedMediaType
from api.uploads import check_image, read_image, read_raw_body
from api.url_fetch import fetch_image
from core.settings import UploadSettings, UrlFetchSettings

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(request: Request) -> bool:
    return media_type(request) == JSON


def is_raw_image(request: Request) -> bool:
    """The body is the image file (its real type is still taken from its magic bytes)."""
    ctype = media_type(request)
    return ctype.startswith("image/") or ctype == OCTET_STREAM


async def json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidField("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidField('the JSON body must be an object such as {"image": "<base64>"}')
    return body


async def decode_base64_image(value, limits: UploadSettings, field: str = "image") -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidField(f"{field} must be a base64 string of the image file")
    if value.startswith("data:"):  # a data URL: data:image/jpeg;base64,....
        value = value.partition(",")[2]
    if len(value) > limits.max_bytes * 4 // 3 + 8:
        raise PayloadTooLarge(f"the image is larger than the limit of {limits.max_bytes} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{field} is not valid base64") from None
    return await check_image(data, limits)


async def image_bytes(request: Request, file: UploadFile | None, limits: UploadSettings,
                      body: dict | None = None, url_settings: UrlFetchSettings | None = None,
                      raw: bool = False) -> bytes:
    """The photo of a single-image request (multipart `file`, JSON `image` or JSON `url`, and
    with `raw` the body itself)."""
    if file is not None:
        return await read_image(file, limits)
    if raw and is_raw_image(request):
        return await read_raw_body(request, limits)
    if body is None and is_json(request):
        body = await json_body(request)
    if body is not None:
        if "image" not in body and "url" in body and url_settings is not None:
            return await check_image(await fetch_image(body["url"], url_settings), limits)
        if "image" not in body:
            raise InvalidField('image: required (base64 of the image file) in the JSON body')
        return await decode_base64_image(body["image"], limits)
    ctype = request.headers.get("content-type", "")
    if not ctype or ctype.startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise MissingField('file: Field required (the photo as a multipart part "file", or send '
                           'application/json {"image": "<base64>"})')
    raise UnsupportedMediaType('send the photo as multipart/form-data (part "file")' +
                               (", as the body itself (Content-Type image/jpeg, image/png, ...)" if raw else "") +
                               ' or as application/json {"image": "<base64>"}')


def json_request_body(example: dict, required: list[str], extra_props: dict | None = None,
                      raw: bool = False) -> dict:
    """OpenAPI for the JSON alternative (and with `raw` the image body), merged beside
    FastAPI's multipart schema."""
    props = {"image": {"type": "string", "format": "byte", "description": "the image file, base64"},
             "url": {"type": "string", "format": "uri", "description": "instead of image, when the server "
                     "enables it (FA_URL_ENABLED): an http(s) URL on an allowed host"}}
    props.update(extra_props or {})
    content = {JSON: {"schema": {"type": "object", "required": required, "properties": props}, "example": example}}
    if raw:
        binary = {"schema": {"type": "string", "format": "binary",
                             "description": "the image file itself (its type is read from its bytes)"}}
        content |= {"image/*": binary, OCTET_STREAM: binary}
    return {"requestBody": {"content": content}}
