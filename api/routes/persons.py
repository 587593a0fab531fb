"""/persons: list, inspect, name, merge and erase people; their samples and sightings (beyond the spec)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from api.errors import NotFound
from api.identity import clean_name
from api.deps import IdentityDep, RepositoryDep
from api.schemas import (PERSON_ID_PATTERN, BBox, Merged, MergeRequest, Person, PersonChanged, PersonPatch,
                         PersonsPage, SampleDeleted, SampleOut, SamplesPage, Sighting, SightingsPage)

router = APIRouter(prefix="/persons", tags=["persons"])

# bounds keep every value inside what both databases take (a 64-bit LIMIT/OFFSET, ids)
PersonId = Annotated[str, Path(min_length=1, max_length=128, pattern=PERSON_ID_PATTERN,
                               description="known_<slug>_<unix ts> or unknown_<unix ts>_<4 digits>")]
SampleId = Annotated[int, Path(ge=0, le=2**62, description="from GET /persons/{person_id}/samples")]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]


def _person(row) -> Person:
    return Person(person_id=row.person_id, identity=row.kind, person_name=row.person_name,
                  detection_count=row.detection_count, first_seen=row.first_seen, last_seen=row.last_seen)


@router.get("", response_model=PersonsPage, summary="Known and unknown people, paged")
async def list_persons(repo: RepositoryDep, identity: str | None = Query(None, pattern="^(known|unknown)$"),
                       limit: Limit = 50, offset: Offset = 0,
                       search: str | None = Query(None, max_length=100,
                                                  description="part of a name or person id, any case")):
    total, rows = await repo.list_persons(identity, limit, offset, search)
    return PersonsPage(total=total, limit=limit, offset=offset, persons=[_person(r) for r in rows])


@router.get("/{person_id}", response_model=Person, summary="One person")
async def get_person(repo: RepositoryDep, person_id: PersonId):
    row = await repo.get_person(person_id)
    if row is None:
        raise NotFound(f"no person {person_id}")
    return _person(row)


@router.get("/{person_id}/crop", response_class=Response, summary="The person's aligned face crop (JPEG)",
            responses={200: {"content": {"image/jpeg": {}}}})
async def person_crop(repo: RepositoryDep, person_id: PersonId):
    crop = await repo.person_crop(person_id)
    if not crop:
        raise NotFound(f"no face crop for {person_id}")
    return Response(crop, media_type="image/jpeg")


@router.patch("/{person_id}", response_model=PersonChanged,
              summary="Rename a known person, or name an unknown one (it becomes known)",
              description="A name another known person already has is refused with 409 `name_taken`: "
                          "making two people one is an explicit POST /persons/{person_id}/merge.")
async def patch_person(identity: IdentityDep, person_id: PersonId, body: PersonPatch):
    name = clean_name(body.person_name)
    target = await identity.name_person(person_id, name)
    return PersonChanged(message=f"{person_id} is now {name}", person_id=target)


@router.delete("/{person_id}", response_model=PersonChanged,
               summary="Erase a person: embeddings, crops, images and detections")
async def delete_person(identity: IdentityDep, person_id: PersonId):
    n = await identity.delete_person(person_id)
    return PersonChanged(message=f"erased {person_id} ({n} rows)", person_id=person_id)


@router.post("/{person_id}/merge", response_model=Merged, summary="Merge this person into another",
             description="Samples, sightings and counts move; the merged person no longer exists, in every "
                         "worker's gallery. Known into known, unknown into known or unknown, and known with "
                         "unknown (the known person survives whichever side it is: a name is never dropped).")
async def merge_person(identity: IdentityDep, person_id: PersonId, body: MergeRequest):
    m = await identity.merge(person_id, body.into)
    return Merged(message=f"{m.merged_id} merged into {m.person_id}", person_id=m.person_id,
                  merged_id=m.merged_id, identity=m.identity)


@router.get("/{person_id}/samples", response_model=SamplesPage, summary="The faces a person's template is made of",
            description="A known person's registered samples. An unknown person has one: sample 0, the face "
                        "it was first seen with.")
async def list_samples(repo: RepositoryDep, person_id: PersonId):
    samples = await repo.samples(person_id)
    if samples is None:
        raise NotFound(f"no person {person_id}")
    return SamplesPage(person_id=person_id, samples=[SampleOut(**vars(x)) for x in samples])


@router.delete("/{person_id}/samples/{sample_id}", response_model=SampleDeleted,
               summary="Remove one sample; the template is recomputed from the others",
               description="The last sample cannot be removed (409 `last_sample`): delete the person instead.")
async def delete_sample(identity: IdentityDep, person_id: PersonId, sample_id: SampleId):
    left = await identity.delete_sample(person_id, sample_id)
    return SampleDeleted(message=f"removed sample {sample_id} of {person_id}", person_id=person_id, samples=left)


@router.get("/{person_id}/samples/{sample_id}/crop", summary="The stored aligned face crop of a sample (JPEG)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def sample_crop(repo: RepositoryDep, person_id: PersonId, sample_id: SampleId):
    crop = await repo.sample_crop(person_id, sample_id)
    if crop is None:
        raise NotFound(f"no stored crop for sample {sample_id} of {person_id}")
    return Response(crop, media_type="image/jpeg")


@router.get("/{person_id}/sightings", response_model=SightingsPage, summary="A person's detections, newest first")
async def sightings(repo: RepositoryDep, person_id: PersonId, limit: Limit = 50, offset: Offset = 0):
    if await repo.get_person(person_id) is None:
        raise NotFound(f"no person {person_id}")
    total, rows = await repo.sightings(person_id, limit, offset)
    return SightingsPage(person_id=person_id, total=total, limit=limit, offset=offset, sightings=[
        Sighting(detection_id=r.detection_id, detected_at=r.detected_at, identity=r.face_type,
                 bbox=BBox(x=r.box[0], y=r.box[1], width=r.box[2], height=r.box[3]), confidence=r.confidence,
                 age=r.age, gender=r.gender, gender_confidence=r.gender_confidence, similarity=r.similarity)
        for r in rows])
