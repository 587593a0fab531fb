"""What routes need, as typed FastAPI dependencies (the full-stack-fastapi-template style).

The lifespan builds the parts once per worker and keeps them in `app.state.services`; a route
states which parts it uses in its signature (`settings: SettingsDep`, `repo: RepositoryDep`, ...)
and a test can swap one with `app.dependency_overrides[deps.app_settings] = ...`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.identity import IdentityService
from api.inference import InferenceClient
from api.repository import Repository
from api.webhooks import Webhooks
from core.settings import Settings


@dataclass
class Services:
    """The parts one worker builds in its lifespan."""
    settings: Settings
    inference: InferenceClient
    repo: Repository
    identity: IdentityService
    webhooks: Webhooks | None = None


def services(request: Request) -> Services:
    return request.app.state.services


def app_settings(request: Request) -> Settings:
    return services(request).settings


def inference(request: Request) -> InferenceClient:
    return services(request).inference


def repository(request: Request) -> Repository:
    return services(request).repo


def identity(request: Request) -> IdentityService:
    return services(request).identity


def webhooks(request: Request) -> Webhooks:
    return services(request).webhooks


ServicesDep = Annotated[Services, Depends(services)]  # /health checks every part
SettingsDep = Annotated[Settings, Depends(app_settings)]
InferenceDep = Annotated[InferenceClient, Depends(inference)]
RepositoryDep = Annotated[Repository, Depends(repository)]
IdentityDep = Annotated[IdentityService, Depends(identity)]
WebhooksDep = Annotated[Webhooks, Depends(webhooks)]
