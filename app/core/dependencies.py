"""Dependencies for the objects the lifespan builds and stores on `app.state`. They are `async`
so that FastAPI calls them directly instead of in its thread pool."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.ratelimit import RateLimits
from app.llm.registry import ProviderRegistry
from app.projects.config import ProjectConfigs


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_llm_registry(request: Request) -> ProviderRegistry:
    registry: ProviderRegistry = request.app.state.llm_registry
    return registry


async def get_rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


async def get_project_configs(request: Request) -> ProjectConfigs:
    configs: ProjectConfigs = request.app.state.project_configs
    return configs


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
LLMRegistryDep = Annotated[ProviderRegistry, Depends(get_llm_registry)]
RateLimitsDep = Annotated[RateLimits, Depends(get_rate_limits)]
ProjectConfigsDep = Annotated[ProjectConfigs, Depends(get_project_configs)]
