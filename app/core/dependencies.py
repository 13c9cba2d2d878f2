"""Dependencies for the objects the lifespan builds and stores on `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.llm.registry import ProviderRegistry


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_llm_registry(request: Request) -> ProviderRegistry:
    registry: ProviderRegistry = request.app.state.llm_registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
LLMRegistryDep = Annotated[ProviderRegistry, Depends(get_llm_registry)]
