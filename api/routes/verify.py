"""POST /verify: are two faces the same person? Two photos, or a photo and a person_id.

Nothing is written. The answer uses the deployed matching threshold (FA_MATCH_THRESHOLD), the
same one /analyze matches with.
"""

from __future__ import annotations

import re

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile

from api.errors import EmbeddingVersionMismatch, InvalidField
from api.identity import pick_face
from api.deps import IdentityDep, InferenceDep, SettingsDep
from api.routes.common import bbox
from api.schemas import PERSON_ID_PATTERN, VerifyFace, VerifyResponse
from api.uploads import read_image

router = APIRouter()


@router.post("/verify", response_model=VerifyResponse, summary="Are two faces the same person?",
             description="Send file1 and either file2 or person_id. Each photo must show a face (400 "
                         "`no_face` naming the side otherwise); with several, the largest one is used "
                         "unless largest_face=false, which makes several faces a 400 `too_many_faces`.")
async def verify(settings: SettingsDep, inference: InferenceDep, identity: IdentityDep,
                 file1: UploadFile = File(..., description="a photo"),
                 file2: UploadFile | None = File(None, description="another photo, or send person_id"),
                 person_id: str | None = Form(None, max_length=128, description="a known or unknown person"),
                 largest_face: bool = Form(True)):
    if (file2 is None) == (person_id is None):
        raise InvalidField("send exactly one of file2 and person_id besides file1")
    if person_id is not None and not re.fullmatch(PERSON_ID_PATTERN, person_id):
        raise InvalidField("person_id must be an id as /analyze or /register return it")
    sides = [file1] + ([file2] if file2 is not None else [])
    datas = [await read_image(upload, settings.upload) for upload in sides]

    async def work(version):
        """Both sides embedded by one face_multitask version (the gallery's when there is one)."""
        faces, versions = [], set()
        for label, data in zip(("file1", "file2"), datas):
            analysis = await inference.analyze(data, settings.detection.min_face_size, multitask_version=version,
                                           small_faces=settings.detection.small_faces)
            faces.append((pick_face(analysis, largest_face, label), len(analysis.faces)))
            versions.add(analysis.model_version)
        if person_id is not None:
            _, name, other = await identity.template_of(person_id, analysis)
            return faces, name, other
        if len(versions) > 1:  # a publish between the two calls
            raise EmbeddingVersionMismatch("the two photos were embedded by different face_multitask "
                                           "versions; retry")
        return faces, None, faces[1][0].embedding
    # two photos need no gallery: whichever version the pipeline embeds both with
    faces, name, other = await (identity.in_gallery_version(work) if person_id is not None else work(None))
    similarity = float(np.dot(faces[0][0].embedding, other))
    threshold = settings.matching.threshold
    out = [VerifyFace(bbox=bbox(f), confidence=round(f.score, 4), faces_in_image=n) for f, n in faces]
    return VerifyResponse(similarity=round(similarity, 4), verified=similarity >= threshold, threshold=threshold,
                          face1=out[0], face2=out[1] if len(out) > 1 else None,
                          person_id=person_id, person_name=name)
