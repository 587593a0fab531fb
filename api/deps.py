"""What routes need, as typed FastAPI dependencies (the full-stack-fastapi-template style).

The lifespan builds the parts once per worker and keeps them in `app.state.services`; a route
states which parts it uses in its signature (`settings: SettingsDep`, `repo: RepositoryDep`, ...)
and a test can swap one with `app.dependency_overrides[deps.app_settings] = ...`.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in its
thread pool, and a thread hop per dependency (four on /analyze) cost more CPU than the lookup.
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


async def services(request: Request) -> Services:
    return request.app.state.services


async def app_settings(request: Request) -> Settings:
    return request.app.state.services.settings


async def inference(request: Request) -> InferenceClient:
    return request.app.state.services.inference


async def repository(request: Request) -> Repository:
    return request.app.state.services.repo


async def identity(request: Request) -> IdentityService:
    return request.app.state.services.identity


async def webhooks(request: Request) -> Webhooks:
    return request.app.state.services.webhooks


ServicesDep = Annotated[Services, Depends(services)]  # /health checks every part
SettingsDep = Annotated[Settings, Depends(app_settings)]
InferenceDep = Annotated[InferenceClient, Depends(inference)]
RepositoryDep = Annotated[Repository, Depends(repository)]
IdentityDep = Annotated[IdentityService, Depends(identity)]
WebhooksDep = Annotated[Webhooks, Depends(webhooks)]
