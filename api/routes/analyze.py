"""POST /analyze: every face with box, confidence, age, gender and identity."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Request, UploadFile

from api import metrics
from api.face_view import face_out, quality
from api.request_options import AnalyzeOptions, analyze_options
from api.routes.common import services
from api.schemas import AnalyzeResponse
from api.uploads import read_image

router = APIRouter()


@router.post("/analyze", response_model=AnalyzeResponse, summary="Analyse every face in a photo")
async def analyze(request: Request, file: UploadFile = File(..., description="JPEG, PNG, WebP, BMP, TIFF or GIF"),
                  options: AnalyzeOptions = Depends(analyze_options)):
    s = services(request)
    data = await read_image(file, s.settings.upload)
    analysis = await s.inference.analyze(data, options.min_face_size, options.max_faces)
    if options.min_confidence:
        analysis.faces = [f for f in analysis.faces if f.score >= options.min_confidence]
    metrics.FACES.observe(len(analysis.faces))
    gate = s.settings.quality.min_score
    qualities = [quality(f) for f in analysis.faces]
    identified = await s.identity.identify(analysis, options.threshold, [q.overall >= gate for q in qualities])
    faces = [face_out(r, q, gate, options.include) for r, q in zip(identified, qualities)]
    message = f"Successfully analyzed {len(faces)} face(s)" if faces else "No faces detected in the image"
    return AnalyzeResponse(faces=faces, message=message,
                           image={"width": analysis.width, "height": analysis.height})
