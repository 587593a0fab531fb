"""/persons: list, inspect, name and erase people (beyond the spec)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.errors import NotFound
from api.identity import clean_name
from api.routes.common import services
from api.schemas import Person, PersonChanged, PersonPatch, PersonsPage

router = APIRouter(prefix="/persons", tags=["persons"])


def _person(row) -> Person:
    return Person(person_id=row.person_id, identity=row.kind, person_name=row.person_name,
                  detection_count=row.detection_count, first_seen=row.first_seen, last_seen=row.last_seen)


@router.get("", response_model=PersonsPage, summary="Known and unknown people, paged")
async def list_persons(request: Request, identity: str | None = Query(None, pattern="^(known|unknown)$"),
                       limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                       search: str | None = Query(None, max_length=100,
                                                  description="part of a name or person id, any case")):
    total, rows = await services(request).repo.list_persons(identity, limit, offset, search)
    return PersonsPage(total=total, limit=limit, offset=offset, persons=[_person(r) for r in rows])


@router.get("/{person_id}", response_model=Person, summary="One person")
async def get_person(request: Request, person_id: str):
    row = await services(request).repo.get_person(person_id)
    if row is None:
        raise NotFound(f"no person {person_id}")
    return _person(row)


@router.get("/{person_id}/crop", response_class=Response, summary="The person's aligned face crop (JPEG)",
            responses={200: {"content": {"image/jpeg": {}}}})
async def person_crop(request: Request, person_id: str):
    crop = await services(request).repo.person_crop(person_id)
    if not crop:
        raise NotFound(f"no face crop for {person_id}")
    return Response(crop, media_type="image/jpeg")


@router.patch("/{person_id}", response_model=PersonChanged,
              summary="Rename a known person, or name an unknown one (it becomes known)")
async def patch_person(request: Request, person_id: str, body: PersonPatch):
    name = clean_name(body.person_name)
    target = await services(request).identity.name_person(person_id, name)
    return PersonChanged(message=f"{person_id} is now {name}", person_id=target)


@router.delete("/{person_id}", response_model=PersonChanged,
               summary="Erase a person: embeddings, crops, images and detections")
async def delete_person(request: Request, person_id: str):
    n = await services(request).identity.delete_person(person_id)
    return PersonChanged(message=f"erased {person_id} ({n} rows)", person_id=person_id)
