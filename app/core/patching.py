"""PATCH semantics shared by the services: only the fields sent change; some may not be null."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.core.errors import ValidationFailedError


def apply_patch(entity: Any, data: BaseModel, *, not_null: tuple[str, ...]) -> None:
    changes = data.model_dump(exclude_unset=True)
    nulls = [field for field in not_null if field in changes and changes[field] is None]
    if nulls:
        raise ValidationFailedError(
            f"{', '.join(nulls)} cannot be null.",
            details=[{"field": f, "message": "may not be null", "type": "not_null"} for f in nulls],
        )
    for field, value in changes.items():
        setattr(entity, field, value)
