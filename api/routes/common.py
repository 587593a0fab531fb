"""What every route needs: the services created in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from api.identity import IdentityService
from api.inference import InferenceClient
from api.repository import Repository
from api.settings import Settings


@dataclass
class Services:
    settings: Settings
    inference: InferenceClient
    repo: Repository
    identity: IdentityService


def services(request: Request) -> Services:
    return request.app.state.services
