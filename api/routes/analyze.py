"""POST /analyze: every face with box, confidence, age, gender and identity."""

from __future__ import annotations

from fastapi import APIRouter, File, Request, UploadFile

from api import metrics
from api.routes.common import services
from api.schemas import AnalyzeResponse, BBox, FaceOut
from api.uploads import read_image

router = APIRouter()


@router.post("/analyze", response_model=AnalyzeResponse, summary="Analyse every face in a photo")
async def analyze(request: Request, file: UploadFile = File(..., description="JPEG, PNG, WebP, BMP, TIFF or GIF")):
    s = services(request)
    data = await read_image(file, s.settings.upload)
    analysis = await s.inference.analyze(data, s.settings.detection.min_face_size, s.settings.detection.max_faces)
    metrics.FACES.observe(len(analysis.faces))
    identified = await s.identity.identify(analysis)
    faces = []
    for r in identified:
        x1, y1, x2, y2 = (float(v) for v in r.face.box)
        male = r.face.p_male >= 0.5
        faces.append(FaceOut(
            bbox=BBox(x=round(x1), y=round(y1), width=round(x2 - x1), height=round(y2 - y1)),
            confidence=round(r.face.score, 4), age=round(r.face.age, 1),
            gender="male" if male else "female",
            gender_confidence=round(r.face.p_male if male else 1 - r.face.p_male, 4),
            identity=r.kind, person_id=r.person_id, person_name=r.person_name,
            similarity=None if r.similarity is None else round(r.similarity, 4)))
    message = f"Successfully analyzed {len(faces)} face(s)" if faces else "No faces detected in the image"
    return AnalyzeResponse(faces=faces, message=message,
                           image={"width": analysis.width, "height": analysis.height})
