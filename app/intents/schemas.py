"""Intent request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.intents.matcher import regex_problem

IntentName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Reply = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Priority = Annotated[int, Field(ge=-1000, le=1000)]


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class IntentPattern(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["keyword", "regex"] = Field(
        description="`keyword`: the words appear as whole words, any case. `regex`: a regular "
        "expression found anywhere in the message (case-insensitive), matched with a time limit."
    )
    value: Annotated[str, StringConstraints(min_length=1, max_length=500)]

    @field_validator("value")
    @classmethod
    def _usable(cls, value: str, info: object) -> str:
        if not value.strip():
            raise ValueError("must not be only whitespace")
        return value


Patterns = Annotated[list[IntentPattern], Field(min_length=1, max_length=50)]
Links = Annotated[list[Link], Field(max_length=20)]


def _check_regexes(patterns: list[IntentPattern] | None) -> list[IntentPattern] | None:
    for index, pattern in enumerate(patterns or []):
        if pattern.type == "regex" and (problem := regex_problem(pattern.value)):
            raise ValueError(f"pattern {index} {problem}")
    return patterns


_PATTERNS_DOC = "1..50 patterns; the intent matches when any one of them does."
_PRIORITY_DOC = "Higher is tried first (-1000..1000); equal priorities: the newest intent first."

EXAMPLE: dict[str, Any] = {
    "name": "check_status",
    "patterns": [
        {"type": "keyword", "value": "cek status"},
        {"type": "regex", "value": r"status\s+(pengajuan|surat)"},
    ],
    "reply": "Untuk melihat status pengajuan, silakan login terlebih dahulu.",
    "links": [{"text": "Login", "url": "/user/login"}],
    "requires_login": True,
    "priority": 10,
}


IntentAction = Literal["reply", "handoff"]
_ACTION_DOC = (
    "`reply` answers with the reply. `handoff`: on a WhatsApp channel, the conversation is "
    "handed to a human operator (the channel's handoff message is sent); elsewhere the reply "
    "is sent as usual."
)


class IntentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    name: IntentName = Field(description="Reported as `intent` when it answers a message.")
    patterns: Patterns = Field(description=_PATTERNS_DOC)
    reply: Reply = Field(
        description="The canned reply (1..4000 characters); `{{name}}` placeholders are filled "
        "from the request's `context`."
    )
    links: Links = Field(default_factory=list, description="Up to 20 `{text, url}` links.")
    requires_login: bool = False
    action: IntentAction = Field(default="reply", description=_ACTION_DOC)
    priority: Priority = Field(default=0, description=_PRIORITY_DOC)
    active: bool = True

    _regexes = field_validator("patterns")(_check_regexes)


class IntentUpdate(BaseModel):
    """Only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"active": False}]})

    name: IntentName | None = None
    patterns: Patterns | None = Field(default=None, description=_PATTERNS_DOC)
    reply: Reply | None = None
    links: Links | None = None
    requires_login: bool | None = None
    action: IntentAction | None = Field(default=None, description=_ACTION_DOC)
    priority: Priority | None = Field(default=None, description=_PRIORITY_DOC)
    active: bool | None = None

    _regexes = field_validator("patterns")(_check_regexes)


class IntentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    patterns: list[IntentPattern]
    reply: str
    links: list[Link]
    requires_login: bool
    action: str
    priority: int
    active: bool
    created_at: datetime
    updated_at: datetime
