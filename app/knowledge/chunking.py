"""A parsed document into chunks, each with its character offsets in the document's text, its
page range and its heading path (`semantic-text-splitter`'s `chunk_indices` gives the offsets).

The document's text is its pages joined by blank lines; a chunk's pages are those its first
and last characters fall on."""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass

from semantic_text_splitter import MarkdownSplitter

from app.knowledge.parsing import Parsed

PAGE_BREAK = "\n\n"
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


@dataclass
class Chunk:
    position: int
    text: str
    char_start: int
    char_end: int
    page_start: int | None
    page_end: int | None
    heading: str | None
    content_hash: str


def document_text(parsed: Parsed) -> tuple[str, list[int]]:
    """The whole text, and where each page starts in it."""
    starts, offset = [], 0
    for page in parsed.pages:
        starts.append(offset)
        offset += len(page) + len(PAGE_BREAK)
    return PAGE_BREAK.join(parsed.pages), starts


def chunk(parsed: Parsed, min_chars: int, max_chars: int) -> tuple[str, list[Chunk]]:
    text, page_starts = document_text(parsed)
    headings = [
        (match.start(), len(match.group(1)), match.group(2).strip())
        for match in _HEADING.finditer(text)
    ]
    heading_offsets = [offset for offset, _, _ in headings]
    splitter = MarkdownSplitter((min_chars, max_chars))
    chunks: list[Chunk] = []
    for start, end in _spans(splitter.chunk_indices(text)):
        content = text[start:end]
        page_start = page_end = None
        if parsed.paged:
            page_start = bisect.bisect_right(page_starts, start)
            page_end = bisect.bisect_right(page_starts, max(start, end - 1))
        chunks.append(
            Chunk(
                position=len(chunks),
                text=content,
                char_start=start,
                char_end=end,
                page_start=page_start,
                page_end=page_end,
                heading=_path(
                    headings, bisect.bisect_right(heading_offsets, start + (_body_at(content) or 0))
                ),
                content_hash=hashlib.sha256(content.encode()).hexdigest(),
            )
        )
    return text, chunks


def _spans(pieces: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """(start, end) of each chunk, a chunk of headings only joined to the next one: a
    heading alone answers nothing, and belongs with the text it heads."""
    spans: list[tuple[int, int]] = []
    carried: int | None = None
    for start, content in pieces:
        if _body_at(content) is None:
            carried = start if carried is None else carried
            continue
        spans.append((start if carried is None else carried, start + len(content)))
        carried = None
    if carried is not None:  # headings at the very end: a chunk of their own after all
        last = pieces[-1]
        spans.append((carried, last[0] + len(last[1])))
    return spans


def _body_at(content: str) -> int | None:
    """Where the chunk's first line of body text starts (past the headings it opens with);
    None if it has none."""
    offset = 0
    for line in content.splitlines(keepends=True):
        if line.strip() and not _HEADING.match(line.rstrip("\n")):
            return offset
        offset += len(line)
    return None


def _path(headings: list[tuple[int, int, str]], before: int) -> str | None:
    """The heading path at a point: the last heading of each level above the one after it
    ("Install > Linux")."""
    stack: list[tuple[int, str]] = []
    for _, level, title in headings[:before]:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
    return " > ".join(title for _, title in stack) or None
