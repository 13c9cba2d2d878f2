"""Workspace roles and the one rule that compares them.

Roles are ordered: each may do everything the ones below it may.

| role     | may                                                                          |
|----------|------------------------------------------------------------------------------|
| `owner`  | everything, including deleting the workspace and managing owners            |
| `admin`  | manage projects, prompts, intents, API keys, members (not owners), the log   |
| `agent`  | chat, rename sessions, give feedback, operate conversations                  |
| `viewer` | read projects, prompts, intents, sessions, messages and usage                |
"""

from __future__ import annotations

import enum

from app.core.errors import ForbiddenError


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    AGENT = "agent"
    VIEWER = "viewer"


_RANK = {Role.VIEWER: 0, Role.AGENT: 1, Role.ADMIN: 2, Role.OWNER: 3}
_ROLES = frozenset(role.value for role in Role)


def has_role(role: str, minimum: Role) -> bool:
    """Whether a member with `role` may do what needs `minimum`."""
    rank = _RANK.get(Role(role)) if role in _ROLES else None
    return rank is not None and rank >= _RANK[minimum]


def insufficient_role(role: str, needed: Role) -> ForbiddenError:
    names = [r.value for r in Role if _RANK[r] >= _RANK[needed]]
    return ForbiddenError(
        f"This needs the {needed.value} role in this workspace (any of: {', '.join(names)}); "
        f"yours is {role}.",
        code="insufficient_role",
        details=[{"required_role": needed.value, "role": role}],
    )


def check_role(role: str, needed: Role) -> None:
    """403 `insufficient_role` unless `role` reaches `needed`."""
    if not has_role(role, needed):
        raise insufficient_role(role, needed)
