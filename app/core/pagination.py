"""Keyset (cursor) pagination: stable under inserts, one indexed range scan per page."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from app.core.errors import ValidationFailedError

T = TypeVar("T")
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


class Page(BaseModel, Generic[T]):
    """The list envelope: `next_cursor` is opaque; pass it back as `cursor` for the next page."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None


def page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (1..100).")
    ] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


PageParamsDep = Annotated[PageParams, Depends(page_params)]


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _decode_value(column: InstrumentedAttribute[Any], raw: Any) -> Any:
    python_type = column.type.python_type
    if python_type is datetime:
        return datetime.fromisoformat(raw)
    if python_type is uuid.UUID:
        return uuid.UUID(raw)
    if python_type is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if python_type is str and isinstance(raw, str):
        return raw
    raise ValueError("unexpected cursor value")


@dataclass(frozen=True)
class Keyset:
    """An ordering over columns (the last one unique), all ascending or all descending."""

    columns: tuple[InstrumentedAttribute[Any], ...]
    descending: bool = False

    def order_by(self) -> list[ColumnElement[Any]]:
        return [c.desc() if self.descending else c.asc() for c in self.columns]

    def after(self, cursor: str) -> ColumnElement[bool]:
        values = self.decode(cursor)
        row = tuple_(*self.columns)
        bound = tuple_(*values)
        return row < bound if self.descending else row > bound

    def encode(self, row: Any) -> str:
        values = [_encode_value(getattr(row, c.key)) for c in self.columns]
        return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")

    def decode(self, cursor: str) -> list[Any]:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            raw = json.loads(base64.urlsafe_b64decode(padded.encode()))
            if not isinstance(raw, list) or len(raw) != len(self.columns):
                raise ValueError("wrong cursor length")
            return [_decode_value(c, v) for c, v in zip(self.columns, raw, strict=True)]
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise ValidationFailedError(
                "The cursor is invalid; pass back a `next_cursor` from a previous page.",
                code="invalid_cursor",
                details=[
                    {"field": "cursor", "message": "invalid cursor", "type": "invalid_cursor"}
                ],
            ) from exc

    def paginate(self, statement: Select[Any], params: PageParams) -> Select[Any]:
        if params.cursor:
            statement = statement.where(self.after(params.cursor))
        return statement.order_by(*self.order_by()).limit(params.limit + 1)

    def page(self, rows: Sequence[T], params: PageParams) -> tuple[list[T], str | None]:
        """Trim the extra look-ahead row and compute the next cursor."""
        items = list(rows[: params.limit])
        has_more = len(rows) > params.limit
        return items, (self.encode(items[-1]) if has_more and items else None)
