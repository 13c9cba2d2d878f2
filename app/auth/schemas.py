"""Auth request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

PASSWORD_MIN, PASSWORD_MAX = 8, 128


def check_password_policy(password: str) -> str:
    if len(password) < PASSWORD_MIN or len(password) > PASSWORD_MAX:
        raise ValueError(
            f"Password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long "
            f"(got {len(password)})."
        )
    if not password.strip():
        raise ValueError("Password must not be only whitespace.")
    return password


class UserCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "user@example.com", "password": "securepassword123"}]
        }
    )

    email: EmailStr = Field(max_length=320, examples=["user@example.com"])
    password: str = Field(
        description=f"{PASSWORD_MIN}..{PASSWORD_MAX} characters.", examples=["password123"]
    )

    @field_validator("password")
    @classmethod
    def _password_policy(cls, value: str) -> str:
        return check_password_policy(value)


class LoginJSON(BaseModel):
    email: EmailStr = Field(max_length=320, examples=["user@example.com"])
    password: str = Field(max_length=PASSWORD_MAX * 4, examples=["password123"])


class RefreshRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": "the refresh_token from /auth/login"}]}
    )

    refresh_token: str = Field(min_length=1, max_length=512)


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    created_at: datetime


class UserMe(UserRead):
    workspace_id: uuid.UUID = Field(description="The personal workspace this user's data lives in.")
    role: str


class TokenPair(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")


class PasswordResetRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"email": "user@example.com"}]}
    )

    email: EmailStr = Field(max_length=320)


class PasswordResetConfirm(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"token": "the-token-from-the-link", "new_password": "a-new-password"}]
        },
    )

    token: str = Field(min_length=1, max_length=200)
    new_password: str = Field(description=f"{PASSWORD_MIN}..{PASSWORD_MAX} characters.")

    @field_validator("new_password")
    @classmethod
    def _password_length(cls, value: str) -> str:
        return check_password_policy(value)


class Accepted(BaseModel):
    status: str = Field(examples=["accepted"])
