"""What every route needs: the services created in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from api.identity import IdentityService
from api.inference import InferenceClient
from api.repository import Repository
from api.schemas import BBox
from api.webhooks import Webhooks
from core.settings import Settings


@dataclass
class Services:
    settings: Settings
    inference: InferenceClient
    repo: Repository
    identity: IdentityService
    webhooks: Webhooks | None = None


def services(request: Request) -> Services:
    return request.app.state.services


def bbox(face) -> BBox:
    """A face's box as the API reports it: x, y, width, height in original pixels."""
    x, y, w, h = face.xywh
    return BBox(x=x, y=y, width=w, height=h)
