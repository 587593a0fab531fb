"""Sync and async clients for the Face Analytics API.

Both share one description of every call (``_Call``: method, path, arguments, how to read the
answer); only sending differs. 429 and 503 answers and failed connections are retried with
exponential backoff and jitter (``Retry-After`` is honoured): the API writes nothing on those,
so retrying even /analyze and /register is safe. Any other error raises ``ApiError``.

    from face_analytics_client import FaceAnalyticsClient
    with FaceAnalyticsClient("http://127.0.0.1:8000", api_key=None) as fa:
        for face in fa.analyze("group.jpg").faces:
            print(face.label, face.age, face.gender)
"""

from __future__ import annotations

import asyncio
import mimetypes
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar, Union

import httpx

from face_analytics_client.errors import ApiError, ConnectionFailed
from face_analytics_client.models import (
    Analysis, BatchAnalysis, Changed, DetectionSeries, Health, Merged, Person, PersonsPage, Registration, SampleDeleted,
    SamplesPage, SightingsPage, Stats, Verification,
)

T = TypeVar("T")
Image = Union[str, Path, bytes, IO[bytes]]
DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Retry:
    """``attempts`` tries in all; waits ``backoff_s * 2**n`` (half to full, random), at most ``max_wait_s``."""

    attempts: int = 4
    backoff_s: float = 0.25
    max_wait_s: float = 10.0
    statuses: frozenset[int] = frozenset({429, 503})

    def wait(self, attempt: int, response: httpx.Response | None) -> float:
        after = response.headers.get("retry-after", "") if response is not None else ""
        if after.replace(".", "", 1).isdigit():
            return min(float(after), self.max_wait_s)
        return min(self.backoff_s * 2 ** attempt, self.max_wait_s) * random.uniform(0.5, 1.0)


NO_RETRY = Retry(attempts=1)


def _image(image: Image) -> tuple[str, bytes]:
    if isinstance(image, (str, Path)):
        path = Path(image)
        return path.name, path.read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "image", bytes(image)
    return Path(getattr(image, "name", "image")).name, image.read()


def _raw(image: Image) -> tuple[bytes, dict[str, str]]:
    """The photo as the request body itself (what /analyze reads cheapest: no multipart to
    parse). The server takes the real type from the bytes; the header only says it is an image."""
    name, data = _image(image)
    ctype = mimetypes.guess_type(name)[0] or ""
    return data, {"content-type": ctype if ctype.startswith("image/") else "application/octet-stream"}


def _error(r: httpx.Response) -> ApiError:
    try:
        body = r.json()
        return ApiError(r.status_code, str(body.get("error", "http_error")), str(body.get("message", r.text)))
    except (ValueError, AttributeError):
        return ApiError(r.status_code, "http_error", r.text[:200] or r.reason_phrase)


@dataclass
class _Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, Any] | None = None
    files: dict[str, tuple[str, bytes]] | list[tuple[str, tuple[str, bytes]]] | None = None
    content: bytes | None = None  # a raw body (with its content-type in headers)
    headers: dict[str, str] | None = None
    ok: frozenset[int] = field(default_factory=lambda: frozenset({200}))
    retry: bool = True

    def result(self, r: httpx.Response) -> T:
        if r.status_code not in self.ok:
            raise _error(r)
        return self.read(r)


def _model(cls):
    return lambda r: cls.model_validate(r.json())


def _params(**kw) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


class _Endpoints:
    """Every API call, once. ``_run`` returns the result (sync) or an awaitable (async)."""

    def _run(self, call: _Call):  # pragma: no cover - provided by the two clients
        raise NotImplementedError

    def analyze(self, image: Image, mode: str | None = None, include: Iterable[str] | str | None = None,
                threshold: float | None = None, min_face_size: int | None = None, max_faces: int | None = None,
                min_confidence: float | None = None, candidates: int | None = None,
                small_faces: bool | None = None) -> Analysis:
        """Every face of a photo. ``mode``: track (default), search or detect, where the server offers it.
        ``include``: extras per face, any of landmarks, embedding, crop, quality. ``candidates``: the k
        best gallery matches per face. ``small_faces`` False: one detection pass over the photo scaled
        to 480 px (faces from about 1/20 of its long side; fastest on large photos). The other options
        are per-request settings the server bounds (422 outside its limits)."""
        if include is not None and not isinstance(include, str):
            include = ",".join(include)
        params = _params(mode=mode, include=include or None, threshold=threshold, min_face_size=min_face_size,
                         max_faces=max_faces, min_confidence=min_confidence, candidates=candidates,
                         small_faces=None if small_faces is None else str(bool(small_faces)).lower())
        content, headers = _raw(image)
        return self._run(_Call("POST", "/analyze", _model(Analysis), params=params, content=content, headers=headers))

    def analyze_batch(self, images: Iterable[Image], include: Iterable[str] | str | None = None,
                      **options) -> BatchAnalysis:
        """Several photos in one request (POST /analyze/batch, up to the server's limit, 16 by
        default): one result per photo in order, an Analysis or a BatchItemError. ``options`` as for
        analyze (threshold, min_face_size, max_faces, min_confidence, candidates, small_faces)."""
        if include is not None and not isinstance(include, str):
            include = ",".join(include)
        if isinstance(options.get("small_faces"), bool):
            options["small_faces"] = str(options["small_faces"]).lower()
        files = [("files", _image(i)) for i in images]
        return self._run(_Call("POST", "/analyze/batch", _model(BatchAnalysis),
                               params=_params(include=include or None, **options), files=files))

    def register(self, image: Image, name: str, largest_face: bool = False, force: bool = False) -> Registration:
        """``force``: add the sample even when the face does not match the person of that name."""
        data = {"person_name": name, "largest_face": str(largest_face).lower()}
        if force:
            data["force"] = "true"
        return self._run(_Call("POST", "/register", _model(Registration), data=data,
                               files={"file": _image(image)}))

    def stats(self) -> Stats:
        return self._run(_Call("GET", "/stats", _model(Stats)))

    def detections(self, window: str = "24h") -> DetectionSeries:
        """Detections per hour (``24h``) or per day (``30d``)."""
        return self._run(_Call("GET", "/stats/detections", _model(DetectionSeries), params={"window": window}))

    def health(self) -> Health:
        """Never raises for an unhealthy service: 503 carries the same body. Not retried."""
        return self._run(_Call("GET", "/health", _model(Health), ok=frozenset({200, 503}), retry=False))

    def persons(self, identity: str | None = None, search: str | None = None,
                limit: int = 50, offset: int = 0) -> PersonsPage:
        """A page of people; ``search`` matches part of a name or person id, any case."""
        return self._run(_Call("GET", "/persons", _model(PersonsPage),
                               params=_params(identity=identity, search=search, limit=limit, offset=offset)))

    def person(self, person_id: str) -> Person:
        return self._run(_Call("GET", f"/persons/{person_id}", _model(Person)))

    def crop(self, person_id: str) -> bytes:
        """The person's face crop (JPEG)."""
        return self._run(_Call("GET", f"/persons/{person_id}/crop", lambda r: r.content))

    def rename(self, person_id: str, name: str) -> Changed:
        """Rename a known person, or name an unknown one (it becomes known): returns the known id."""
        return self._run(_Call("PATCH", f"/persons/{person_id}", _model(Changed), json={"person_name": name}))

    def merge(self, person_id: str, into: str) -> Merged:
        """Samples, sightings and counts move; ``.person_id`` of the answer is the one that remains."""
        return self._run(_Call("POST", f"/persons/{person_id}/merge", _model(Merged), json={"into": into}))

    def samples(self, person_id: str) -> SamplesPage:
        return self._run(_Call("GET", f"/persons/{person_id}/samples", _model(SamplesPage)))

    def sample_crop(self, person_id: str, sample_id: int) -> bytes:
        return self._run(_Call("GET", f"/persons/{person_id}/samples/{sample_id}/crop", lambda r: r.content))

    def delete_sample(self, person_id: str, sample_id: int) -> SampleDeleted:
        return self._run(_Call("DELETE", f"/persons/{person_id}/samples/{sample_id}", _model(SampleDeleted)))

    def sightings(self, person_id: str, limit: int = 50, offset: int = 0) -> SightingsPage:
        """A person's detections, newest first."""
        return self._run(_Call("GET", f"/persons/{person_id}/sightings", _model(SightingsPage),
                               params={"limit": limit, "offset": offset}))

    def verify(self, image: Image, other: Image | None = None, person_id: str | None = None,
               largest_face: bool = True) -> Verification:
        """Is the face of ``image`` the same person as the face of ``other``, or as ``person_id``?"""
        files = {"file1": _image(image)} | ({"file2": _image(other)} if other is not None else {})
        data = {"largest_face": str(largest_face).lower()} | ({"person_id": person_id} if person_id else {})
        return self._run(_Call("POST", "/verify", _model(Verification), data=data, files=files))

    def delete_person(self, person_id: str) -> Changed:
        return self._run(_Call("DELETE", f"/persons/{person_id}", _model(Changed)))


def _base(base_url: str) -> str:
    return base_url.rstrip("/") or DEFAULT_URL


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


class FaceAnalyticsClient(_Endpoints):
    """Blocking client; thread-safe, so ``analyze_many`` runs calls on a thread pool."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 60.0,
                 retry: Retry = Retry(), transport: httpx.BaseTransport | None = None,
                 max_connections: int = 32):
        self.retry = retry
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.Client(base_url=_base(base_url), headers=_headers(api_key), timeout=timeout,
                                  transport=transport, limits=limits)

    def _run(self, call: _Call[T]) -> T:
        attempts = self.retry.attempts if call.retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                r = self._http.request(call.method, call.path, params=call.params, json=call.json,
                                       data=call.data, files=call.files, content=call.content,
                                       headers=call.headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise ConnectionFailed(f"cannot reach {self._http.base_url}: {exc}") from None
                time.sleep(self.retry.wait(attempt, None))
                continue
            if r.status_code in self.retry.statuses and r.status_code not in call.ok and not last:
                time.sleep(self.retry.wait(attempt, r))
                continue
            return call.result(r)
        raise AssertionError("unreachable")

    def analyze_many(self, images: Iterable[Image], concurrency: int = 8, mode: str | None = None,
                     return_exceptions: bool = False) -> list[Analysis | Exception]:
        """Analyse many photos, ``concurrency`` at a time; results in input order. With
        ``return_exceptions`` a failed photo gives its exception instead of stopping the batch."""
        def one(image):
            try:
                return self.analyze(image, mode)
            except Exception as exc:  # noqa: BLE001 - handed back or re-raised below
                if not return_exceptions:
                    raise
                return exc

        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            return list(pool.map(one, images))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FaceAnalyticsClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncFaceAnalyticsClient(_Endpoints):
    """asyncio client: the same methods as ``FaceAnalyticsClient``, each to be awaited."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 60.0,
                 retry: Retry = Retry(), transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 64):
        self.retry = retry
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=_base(base_url), headers=_headers(api_key), timeout=timeout,
                                       transport=transport, limits=limits)

    async def _send(self, call: _Call[T]) -> T:
        attempts = self.retry.attempts if call.retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                r = await self._http.request(call.method, call.path, params=call.params, json=call.json,
                                             data=call.data, files=call.files, content=call.content,
                                             headers=call.headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise ConnectionFailed(f"cannot reach {self._http.base_url}: {exc}") from None
                await asyncio.sleep(self.retry.wait(attempt, None))
                continue
            if r.status_code in self.retry.statuses and r.status_code not in call.ok and not last:
                await asyncio.sleep(self.retry.wait(attempt, r))
                continue
            return call.result(r)
        raise AssertionError("unreachable")

    def _run(self, call: _Call[T]) -> Awaitable[T]:
        return self._send(call)

    async def analyze_many(self, images: Iterable[Image], concurrency: int = 8, mode: str | None = None,
                           return_exceptions: bool = False) -> list[Analysis | Exception]:
        """Analyse many photos, at most ``concurrency`` in flight; results in input order."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(image):
            async with gate:
                return await self.analyze(image, mode)

        return await asyncio.gather(*(one(i) for i in images), return_exceptions=return_exceptions)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFaceAnalyticsClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
