"""`{{name}}` placeholders in prompts and canned replies, filled from a request's `context`.

Rendering is plain substitution, never evaluation: no attribute access, filters or format
specs, and a value that itself contains `{{...}}` is inserted as-is (not expanded again).
A placeholder with no value in the context renders as the empty string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, StringConstraints

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")

ContextKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
ContextValue = Annotated[str, StringConstraints(max_length=1000)] | int | float | bool | None
Context = Annotated[
    dict[ContextKey, ContextValue],
    Field(
        max_length=50,
        description="Values for `{{name}}` placeholders in the project's prompts and intent "
        "replies (up to 50 keys; names are letters, digits and `_`; values are strings up to "
        "1000 characters, numbers, booleans or null). A placeholder without a value renders "
        "empty.",
        examples=[{"user_name": "Budi", "village": "Sukamaju"}],
    ),
]


def _text(value: str | int | float | bool | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(template: str, context: Mapping[str, str | int | float | bool | None] | None) -> str:
    if "{{" not in template:
        return template
    values = context or {}
    return PLACEHOLDER.sub(lambda m: _text(values.get(m.group(1))), template)
