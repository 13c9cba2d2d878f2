"""What a chat turn needs of its project (settings, active prompts, active intents), cached in
memory per process and checked against `projects.revision`.

Every flush that adds, changes or deletes a project, prompt or intent raises its project's
revision in the same transaction (a `before_flush` hook on every ORM session, so no write path
can forget it). A turn reads the revision in a statement it runs anyway (the session claim, or
the project lookup for a new session) and uses the cached settings only if they carry that
revision; otherwise it reads them again. The cache is never trusted without that check, so it
holds across processes with no invalidation messages.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.intents.matcher import IntentRule
from app.intents.repository import IntentRepository
from app.knowledge.grounding import Grounding
from app.models import Intent, Project, Prompt
from app.prompts.repository import PromptRepository

CACHED_PROJECTS = 2048


@dataclass(frozen=True)
class ProjectConfig:
    """A project as of one revision. `project` is detached: read its columns, never change it."""

    project: Project
    prompts: tuple[str, ...]  # the active prompts' texts, in order
    rules: tuple[IntentRule, ...]  # the active intents, in the order they are tried
    grounding: Grounding | None = None  # how turns use the knowledge base; None: they do not

    @property
    def revision(self) -> int:
        return self.project.revision


class ProjectConfigs:
    """A bounded, least-recently-used map from project id to its latest known config."""

    def __init__(self, size: int = CACHED_PROJECTS) -> None:
        self.size = size
        self._entries: OrderedDict[uuid.UUID, ProjectConfig] = OrderedDict()

    def peek(self, project_id: uuid.UUID) -> ProjectConfig | None:
        """The cached config, whatever its revision (for estimates; never for answers)."""
        return self._entries.get(project_id)

    async def get(
        self, db: AsyncSession, workspace_id: uuid.UUID, project_id: uuid.UUID, revision: int
    ) -> ProjectConfig | None:
        """The config at `revision` (the database's current one): cached, or read. None if the
        project is not in the workspace."""
        cached = self._entries.get(project_id)
        if (
            cached is not None
            and cached.revision == revision
            and cached.project.workspace_id == workspace_id
        ):
            self._entries.move_to_end(project_id)
            return cached
        return await self.load(db, workspace_id, project_id)

    async def current(
        self, db: AsyncSession, workspace_id: uuid.UUID, project_id: uuid.UUID
    ) -> ProjectConfig | None:
        """The project's current config (one small query when the cache is up to date)."""
        revision = await db.scalar(
            select(Project.revision).where(
                Project.workspace_id == workspace_id, Project.id == project_id
            )
        )
        if revision is None:
            return None
        return await self.get(db, workspace_id, project_id, revision)

    async def load(
        self, db: AsyncSession, workspace_id: uuid.UUID, project_id: uuid.UUID
    ) -> ProjectConfig | None:
        # The project first: a change committed between these reads then leaves an entry
        # whose revision is already behind (read again next time), never one that looks newer
        # than its prompts.
        project = await db.scalar(
            select(Project).where(Project.workspace_id == workspace_id, Project.id == project_id)
        )
        if project is None:
            self._entries.pop(project_id, None)
            return None
        db.expunge(project)  # out of the session: its rollback or commit must not expire it
        prompts = await PromptRepository(db, workspace_id).active_contents(project_id)
        rules = await IntentRepository(db, workspace_id).active_rules(project_id)
        config = ProjectConfig(
            project, tuple(prompts), tuple(rules), Grounding.of(project.knowledge)
        )
        self._entries[project_id] = config
        self._entries.move_to_end(project_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return config


def _projects_changed_by(session: Session, objects: Iterable[Any]) -> set[uuid.UUID]:
    changed: set[uuid.UUID] = set()
    for instance in objects:
        if isinstance(instance, Prompt | Intent):
            changed.add(instance.project_id)
        elif isinstance(instance, Project) and session.is_modified(instance):
            changed.add(instance.id)
    return changed


@event.listens_for(Session, "before_flush")
def _raise_revisions(session: Session, _context: Any, _instances: Any) -> None:
    """Raise the revision of every project whose settings, prompts or intents this flush
    changes (new projects start at 1)."""
    changed = _projects_changed_by(session, (*session.new, *session.dirty, *session.deleted))
    new = {p.id for p in session.new if isinstance(p, Project)}
    for project in session.dirty:
        if isinstance(project, Project) and project.id in changed:
            project.revision = Project.revision + 1
            new.add(project.id)  # raised by its own UPDATE
    if changed - new:
        session.execute(
            update(Project)
            .where(Project.id.in_(sorted(changed - new)))
            .values(revision=Project.revision + 1)
        )
