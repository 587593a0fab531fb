"""POST /register: remember a named person from a photo with one face."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile

from api.errors import InvalidField, LowQualityFace, MissingField
from api.face_view import quality
from api.identity import clean_name
from api.deps import IdentityDep, InferenceDep, SettingsDep
from api.schemas import RegisterResponse
from api.image_input import image_bytes, is_json, json_body, json_request_body

router = APIRouter()

RULE = """Exactly one face is required (400 otherwise) unless largest_face=true; faces smaller than
the detection minimum (FA_DETECT_MIN_FACE_SIZE) do not count. The enrolment rule, at the matching
threshold (FA_MATCH_THRESHOLD):
- a new name creates a person, unless the face already matches another known person
  (409 `face_matches_other_person`);
- an existing name gets the photo as another sample only when the face matches that person's
  template (409 `face_mismatch` otherwise), so nobody can slip another face into a person;
- force=true skips both checks: the caller says explicitly that this is a new sample or a new person.
If the face matches an unknown person, that person's history moves to the registered one.
"""


@router.post("/register", response_model=RegisterResponse, summary="Register a known person",
             description=RULE + "A face below "
                         "the quality gate (FA_QUALITY_REGISTER_MIN_SCORE) is refused with 400 and a code "
                         "naming its weakest part: face_blurry, face_not_frontal, face_too_small or "
                         "face_uncertain. The photo may also come as application/json "
                         '{"image": "<base64>", "person_name": "...", "largest_face": false}.',
             openapi_extra=json_request_body(
                 {"image": "/9j/4AAQSkZJRgABAQAAAQABAAD...", "person_name": "John Doe"}, ["person_name"],
                 {"person_name": {"type": "string", "minLength": 1, "maxLength": 100},
                  "largest_face": {"type": "boolean", "default": False},
                  "force": {"type": "boolean", "default": False}}))
async def register(request: Request, settings: SettingsDep, inference: InferenceDep, identity: IdentityDep,
                   file: UploadFile | None = File(None, description="the photo; or send JSON"),
                   person_name: str | None = Form(None), largest_face: bool = Form(False),
                   force: bool = Form(False)):
    body = await json_body(request) if file is None and is_json(request) else None
    if body is not None:
        person_name, largest_face = body.get("person_name"), body.get("largest_face", False)
        force = body.get("force", False)
        if not isinstance(largest_face, bool) or not isinstance(force, bool):
            raise InvalidField("largest_face and force must be true or false")
    if person_name is None:
        raise MissingField("person_name: Field required")
    if not isinstance(person_name, str):
        raise InvalidField("person_name must be a string")
    name = clean_name(person_name)
    data = await image_bytes(request, file, settings.upload, body, url_settings=settings.url_fetch)

    async def work(version):
        analysis = await inference.analyze(data, settings.detection.min_face_size, multitask_version=version,
                                           small_faces=settings.detection.small_faces)
        gate = settings.quality.register_min_score
        if analysis.faces and (len(analysis.faces) == 1 or largest_face):
            q = quality(analysis.faces[0])  # the largest face, the one register takes
            if q.overall < gate:
                raise LowQualityFace(f"the face is below the registration quality gate ({q.overall:.2f} < {gate}; "
                                     f"weakest: {q.weakest}); send a sharp, frontal, well-lit photo", q.weakest)
        return await identity.register(analysis, name, data, largest_face=largest_face, force=force)
    result = await identity.in_gallery_version(work)
    verb = "registered" if result.created else "added a sample to"
    return RegisterResponse(message=f"Successfully {verb} {name}", person_id=result.person_id,
                            samples=result.samples, promoted_unknown_id=result.promoted_unknown,
                            similarity=None if result.similarity is None else round(result.similarity, 4))
