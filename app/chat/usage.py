"""Usage accounting for a project: messages, tokens, failures, latency and feedback, per day."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import field_error
from app.core.types import as_utc
from app.models import ChatMessage, ChatSession, MessageRole, MessageStatus
from app.projects.service import ProjectService

GroupBy = Literal["day", "none"]
DEFAULT_RANGE = timedelta(days=30)
MAX_DAILY_RANGE = timedelta(days=366)


class LatencyStats(BaseModel):
    p50: int | None = Field(description="Median reply latency in ms (null without replies).")
    p95: int | None


class FeedbackStats(BaseModel):
    up: int
    down: int


class UsageStats(BaseModel):
    messages: int = Field(description="Messages stored: `user_messages` + `replies`.")
    user_messages: int
    replies: int = Field(description="Replies generated, including failed and superseded ones.")
    failed: int = Field(description="Replies that failed with nothing generated.")
    incomplete: int = Field(description="Replies that stopped part-way (error or cancel).")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    latency_ms: LatencyStats
    feedback: FeedbackStats


class UsageBucket(UsageStats):
    start: datetime = Field(description="Start of the day (UTC).")


class UsageReport(BaseModel):
    project_id: uuid.UUID
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    group_by: GroupBy
    totals: UsageStats
    buckets: list[UsageBucket] = Field(
        description="One per UTC day in the range, oldest first (empty with `group_by=none`)."
    )


_COUNTERS = (
    "user_messages",
    "replies",
    "failed",
    "incomplete",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "up",
    "down",
)


class UsageService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.projects = ProjectService(session, workspace_id)

    async def report(
        self,
        project_id: uuid.UUID,
        start: datetime | None,
        end: datetime | None,
        group_by: GroupBy,
    ) -> UsageReport:
        await self.projects.get(project_id)
        start, end = _range(start, end, group_by)
        postgres = self.session.get_bind().dialect.name == "postgresql"
        day = _day_expression(postgres)
        counters = [
            func.coalesce(func.sum(expression), 0).label(name)
            for name, expression in _counter_expressions().items()
        ]
        percentiles: list[Any] = []
        if postgres:
            percentiles = [
                func.percentile_cont(q).within_group(ChatMessage.latency_ms).label(name)
                for name, q in (("p50", 0.5), ("p95", 0.95))
            ]
        grouped = await self.session.execute(
            self._scoped(
                select(day.label("day"), *counters, *percentiles), project_id, start, end
            ).group_by(day)
        )
        rows = {_as_date(row.day): row._mapping for row in grouped}
        if postgres:
            total_row = (
                await self.session.execute(
                    self._scoped(select(*percentiles), project_id, start, end)
                )
            ).one()
            total_latency = (total_row.p50, total_row.p95)
            day_latency = {d: (row["p50"], row["p95"]) for d, row in rows.items()}
        else:
            total_latency, day_latency = await self._latencies_in_python(
                day, project_id, start, end
            )

        buckets: list[UsageBucket] = []
        totals: dict[str, int] = defaultdict(int)
        for name in _COUNTERS:
            totals[name] = sum(int(row[name]) for row in rows.values())
        if group_by == "day":
            current = start.date()
            while datetime.combine(current, time(), UTC) < end:
                row = rows.get(current)
                values = {name: int(row[name]) for name in _COUNTERS} if row else {}
                buckets.append(
                    UsageBucket(
                        start=datetime.combine(current, time(), UTC),
                        **_stats(values, day_latency.get(current, (None, None))).model_dump(),
                    )
                )
                current += timedelta(days=1)
        return UsageReport(
            project_id=project_id,
            from_=start,
            to=end,
            group_by=group_by,
            totals=_stats(totals, total_latency),
            buckets=buckets,
        )

    def _scoped(
        self, statement: Select[Any], project_id: uuid.UUID, start: datetime, end: datetime
    ) -> Select[Any]:
        return (
            statement.select_from(ChatMessage)
            .join(ChatSession, ChatSession.id == ChatMessage.chat_session_id)
            .where(
                ChatMessage.workspace_id == self.workspace_id,
                ChatSession.workspace_id == self.workspace_id,
                ChatSession.project_id == project_id,
                ChatMessage.created_at >= start,
                ChatMessage.created_at < end,
            )
        )

    async def _latencies_in_python(
        self, day: Any, project_id: uuid.UUID, start: datetime, end: datetime
    ) -> tuple[tuple[float | None, float | None], dict[date, tuple[float | None, float | None]]]:
        """SQLite has no percentile function: read the replies' latencies (embedded use only)."""
        result = await self.session.execute(
            self._scoped(select(day, ChatMessage.latency_ms), project_id, start, end).where(
                ChatMessage.latency_ms.is_not(None)
            )
        )
        by_day: dict[date, list[int]] = defaultdict(list)
        everything: list[int] = []
        for raw_day, latency in result:
            by_day[_as_date(raw_day)].append(latency)
            everything.append(latency)
        return (
            (percentile(everything, 0.5), percentile(everything, 0.95)),
            {d: (percentile(v, 0.5), percentile(v, 0.95)) for d, v in by_day.items()},
        )


def percentile(values: list[int], q: float) -> float | None:
    """Linear interpolation between closest ranks (the same as Postgres `percentile_cont`)."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _counter_expressions() -> dict[str, Any]:
    def when(condition: Any, value: Any = 1) -> Any:
        return case((condition, value), else_=0)

    reply = ChatMessage.role == MessageRole.ASSISTANT
    return {
        "user_messages": when(ChatMessage.role == MessageRole.USER),
        "replies": when(reply),
        "failed": when(ChatMessage.status == MessageStatus.FAILED),
        "incomplete": when(ChatMessage.status == MessageStatus.INCOMPLETE),
        "prompt_tokens": func.coalesce(ChatMessage.prompt_tokens, 0),
        "completion_tokens": func.coalesce(ChatMessage.completion_tokens, 0),
        "total_tokens": func.coalesce(ChatMessage.total_tokens, 0),
        "up": when(ChatMessage.feedback_rating == "up"),
        "down": when(ChatMessage.feedback_rating == "down"),
    }


def _day_expression(postgres: bool) -> Any:
    if postgres:
        return func.date_trunc("day", func.timezone("UTC", ChatMessage.created_at))
    return func.strftime("%Y-%m-%d", ChatMessage.created_at)  # stored as naive UTC on SQLite


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _stats(values: dict[str, int], latency: tuple[float | None, float | None]) -> UsageStats:
    def get(name: str) -> int:
        return int(values.get(name, 0))

    return UsageStats(
        messages=get("user_messages") + get("replies"),
        user_messages=get("user_messages"),
        replies=get("replies"),
        failed=get("failed"),
        incomplete=get("incomplete"),
        prompt_tokens=get("prompt_tokens"),
        completion_tokens=get("completion_tokens"),
        total_tokens=get("total_tokens"),
        latency_ms=LatencyStats(
            p50=None if latency[0] is None else round(latency[0]),
            p95=None if latency[1] is None else round(latency[1]),
        ),
        feedback=FeedbackStats(up=get("up"), down=get("down")),
    )


def _range(
    start: datetime | None, end: datetime | None, group_by: GroupBy
) -> tuple[datetime, datetime]:
    end = as_utc(end) if end else datetime.now(UTC)
    start = as_utc(start) if start else end - DEFAULT_RANGE
    problem = None
    if start >= end:
        problem = "`from` must be before `to`"
    elif group_by == "day" and end - start > MAX_DAILY_RANGE:
        problem = "with group_by=day the range may span at most 366 days"
    if problem:
        raise field_error("from", problem)
    return start, end
