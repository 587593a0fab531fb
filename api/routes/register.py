"""POST /register: remember a named person from a photo with one face."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile

from api.identity import clean_name
from api.routes.common import services
from api.schemas import RegisterResponse
from api.uploads import read_image

router = APIRouter()


@router.post("/register", response_model=RegisterResponse, summary="Register a known person",
             description="Exactly one face is required (400 otherwise) unless largest_face=true. "
                         "Registering a name that exists adds a sample to that person. If the face "
                         "matches an unknown person, that person's history moves to the new name.")
async def register(request: Request, file: UploadFile = File(...), person_name: str = Form(...),
                   largest_face: bool = Form(False)):
    s = services(request)
    name = clean_name(person_name)
    data = await read_image(file, s.settings.upload)
    analysis = await s.inference.analyze(data)
    result = await s.identity.register(analysis, name, data, largest_face=largest_face)
    verb = "registered" if result.created else "added a sample to"
    return RegisterResponse(message=f"Successfully {verb} {name}", person_id=result.person_id,
                            samples=result.samples, promoted_unknown_id=result.promoted_unknown)
