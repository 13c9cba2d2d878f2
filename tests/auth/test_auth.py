from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from jose import jwt
from passlib.hash import bcrypt
from sqlalchemy import select, update

from app.core.config import Settings
from app.core.security import create_access_token
from app.models import User
from tests import factories


async def test_register_returns_the_user(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/register", json={"email": "New.User@Example.com", "password": "password123"}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "new.user@example.com"
    assert uuid.UUID(body["id"])
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert "password" not in response.text and "hash" not in response.text


async def test_email_is_unique_case_insensitively(client: httpx.AsyncClient) -> None:
    await factories.register(client, "dup@example.com")
    response = await client.post(
        "/auth/register", json={"email": "DUP@example.COM", "password": "password123"}
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_taken"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": "password123"}, "email"),
        ({"email": "a@example.com", "password": "abc"}, "password"),
        ({"email": "a@example.com", "password": "x" * 129}, "password"),
        ({"email": "a@example.com", "password": "        "}, "password"),
        ({"email": "a@example.com"}, "password"),
        ({"email": 5, "password": "password123"}, "email"),
    ],
)
async def test_register_rejects_bad_input(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/auth/register", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert any(d["field"] == field for d in error["details"])


async def test_password_policy_message_is_clear(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/register", json={"email": "a@example.com", "password": "abc"}
    )
    assert "8 to 128 characters" in response.json()["error"]["message"]


async def test_password_boundaries(client: httpx.AsyncClient) -> None:
    for password in ("x" * 8, "y" * 128):
        response = await client.post(
            "/auth/register",
            json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": password},
        )
        assert response.status_code == 201


async def test_login_with_form_and_json(client: httpx.AsyncClient) -> None:
    user = await factories.register(client)
    form = await client.post(
        "/auth/login", data={"username": user["email"].upper(), "password": factories.PASSWORD}
    )
    assert form.status_code == 200
    tokens = form.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 30 * 60
    assert tokens["refresh_token"]
    as_json = await client.post(
        "/auth/login", json={"email": user["email"], "password": factories.PASSWORD}
    )
    assert as_json.status_code == 200
    me = await client.get(
        "/users/me", headers={"Authorization": f"Bearer {as_json.json()['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["email"] == user["email"]
    assert me.json()["id"] == user["id"]


@pytest.mark.parametrize("password", ["wrong-password", ""])
async def test_login_rejects_wrong_password(client: httpx.AsyncClient, password: str) -> None:
    user = await factories.register(client)
    response = await client.post(
        "/auth/login", data={"username": user["email"], "password": password}
    )
    assert response.status_code in (401, 422)
    if response.status_code == 401:
        assert response.json()["error"]["code"] == "invalid_credentials"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_login_unknown_email_looks_like_wrong_password(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/login", data={"username": "nobody@example.com", "password": "password123"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {"username": "a@example.com"}},
        {"json": {"email": "a@example.com"}},
        {"content": b"{oops", "headers": {"Content-Type": "application/json"}},
        {"content": b"", "headers": {"Content-Type": "text/plain"}},
    ],
)
async def test_login_rejects_malformed_bodies(
    client: httpx.AsyncClient, kwargs: dict[str, object]
) -> None:
    response = await client.post("/auth/login", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_refresh_rotates_and_detects_reuse(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    first = await client.post("/auth/refresh", json={"refresh_token": owner.refresh_token})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != owner.refresh_token
    me = await client.get(
        "/users/me", headers={"Authorization": f"Bearer {rotated['access_token']}"}
    )
    assert me.status_code == 200

    reused = await client.post("/auth/refresh", json={"refresh_token": owner.refresh_token})
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "refresh_token_reused"
    # Reuse revokes the whole family: the newest token no longer works either.
    newest = await client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert newest.status_code == 401


async def test_concurrent_refreshes_issue_only_one_pair(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    responses = await asyncio.gather(
        *(
            client.post("/auth/refresh", json={"refresh_token": owner.refresh_token})
            for _ in range(3)
        )
    )
    assert sorted(r.status_code for r in responses).count(200) <= 1


async def test_refresh_rejects_unknown_and_expired_tokens(
    client: httpx.AsyncClient, app: object
) -> None:
    response = await client.post("/auth/refresh", json={"refresh_token": "not-a-token"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_refresh_token"
    assert response.headers["www-authenticate"] == "Bearer"
    empty = await client.post("/auth/refresh", json={"refresh_token": ""})
    assert empty.status_code == 422


async def test_logout_revokes_the_refresh_token(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    response = await client.post("/auth/logout", json={"refresh_token": owner.refresh_token})
    assert response.status_code == 204
    again = await client.post("/auth/refresh", json={"refresh_token": owner.refresh_token})
    assert again.status_code == 401
    # Logging out twice, or with an unknown token, is harmless.
    assert (
        await client.post("/auth/logout", json={"refresh_token": owner.refresh_token})
    ).status_code == 204


def _token(settings: Settings, **claims: object) -> str:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "sub": str(uuid.uuid4()),
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "typ": "access",
    }
    base.update(claims)
    payload = {k: v for k, v in base.items() if v is not None}
    return jwt.encode(payload, settings.SECRET_KEY.get_secret_value(), "HS256")


async def test_users_me_requires_a_valid_token(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    owner = await factories.account(client)
    me = await client.get("/users/me", headers=owner.headers)
    sub = me.json()["id"]
    past = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
    bad_tokens = {
        "garbage": "not.a.jwt",
        "expired": _token(settings, sub=sub, exp=past),
        "no_exp": _token(settings, sub=sub, exp=None),
        "wrong_audience": _token(settings, sub=sub, aud="someone-else"),
        "wrong_issuer": _token(settings, sub=sub, iss="evil"),
        "wrong_type": _token(settings, sub=sub, typ="refresh"),
        "unknown_user": _token(settings),
        "wrong_key": jwt.encode({"sub": sub, "exp": 9999999999}, "other-key", "HS256"),
        "alg_none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
        + jwt.encode({"sub": sub}, "k", "HS256").split(".")[1]
        + ".",
    }
    for name, token in bad_tokens.items():
        response = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "invalid_token", name
        assert response.headers["www-authenticate"] == "Bearer"
    missing = await client.get("/users/me")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "not_authenticated"
    good = _token(settings, sub=sub)
    assert (
        await client.get("/users/me", headers={"Authorization": f"Bearer {good}"})
    ).status_code == 200


async def test_access_token_has_required_claims(settings: Settings) -> None:
    token, _ = create_access_token(settings, uuid.uuid4())
    claims = jwt.get_unverified_claims(token)
    assert {"sub", "exp", "iat", "iss", "aud", "jti"} <= set(claims)


async def test_bcrypt_hashes_verify_and_are_upgraded(
    client: httpx.AsyncClient, app: object
) -> None:
    user = await factories.register(client)
    legacy = bcrypt.hash(factories.PASSWORD)
    maker = app.state.sessionmaker  # type: ignore[attr-defined]
    async with maker() as db, db.begin():
        await db.execute(
            update(User).where(User.id == uuid.UUID(user["id"])).values(password_hash=legacy)
        )
    await factories.login(client, user["email"])
    async with maker() as db:
        stored = (await db.execute(select(User.password_hash))).scalar_one()
    assert stored.startswith("$argon2")


async def test_passwords_are_stored_as_argon2(client: httpx.AsyncClient, app: object) -> None:
    await factories.register(client)
    async with app.state.sessionmaker() as db:  # type: ignore[attr-defined]
        stored = (await db.execute(select(User.password_hash))).scalar_one()
    assert stored.startswith("$argon2id$") and factories.PASSWORD not in stored
