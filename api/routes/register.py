"""POST /register: remember a named person from a photo with one face."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile

from api.errors import LowQualityFace
from api.face_view import quality
from api.identity import clean_name
from api.routes.common import services
from api.schemas import RegisterResponse
from api.uploads import read_image

router = APIRouter()


@router.post("/register", response_model=RegisterResponse, summary="Register a known person",
             description="Exactly one face is required (400 otherwise) unless largest_face=true. "
                         "Registering a name that exists adds a sample to that person. If the face "
                         "matches an unknown person, that person's history moves to the new name. A face below "
                         "the quality gate (FA_QUALITY_REGISTER_MIN_SCORE) is refused with 400 and a code "
                         "naming its weakest part: face_blurry, face_not_frontal, face_too_small or "
                         "face_uncertain.")
async def register(request: Request, file: UploadFile = File(...), person_name: str = Form(...),
                   largest_face: bool = Form(False)):
    s = services(request)
    name = clean_name(person_name)
    data = await read_image(file, s.settings.upload)
    analysis = await s.inference.analyze(data)
    gate = s.settings.quality.register_min_score
    if analysis.faces and (len(analysis.faces) == 1 or largest_face):
        q = quality(analysis.faces[0])  # the largest face, the one register takes
        if q.overall < gate:
            raise LowQualityFace(f"the face is below the registration quality gate ({q.overall:.2f} < {gate}; "
                                 f"weakest: {q.weakest}); send a sharp, frontal, well-lit photo", q.weakest)
    result = await s.identity.register(analysis, name, data, largest_face=largest_face)
    verb = "registered" if result.created else "added a sample to"
    return RegisterResponse(message=f"Successfully {verb} {name}", person_id=result.person_id,
                            samples=result.samples, promoted_unknown_id=result.promoted_unknown)
