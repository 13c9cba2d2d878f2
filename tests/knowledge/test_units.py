"""The pure parts of knowledge bases: type sniffing, chunk pages and heading paths, and how a
question becomes a keyword query."""

from __future__ import annotations

import io

import pytest

from app.knowledge import parsing, search
from app.knowledge.chunking import chunk
from app.knowledge.parsing import Parsed


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (b"%PDF-1.7\n...", "manual.pdf", parsing.PDF),
        (b"%PDF-1.7\n...", None, parsing.PDF),
        (b"%PDF-1.7\n...", "x.bin", None),  # the name says another type
        (b"plain words", "photo.png", None),
        (b"PK\x03\x04rest", "policy.docx", parsing.DOCX),
        (b"PK\x03\x04rest", "archive.zip", None),
        (b"\xef\xbb\xbf<!DOCTYPE html><html>", None, parsing.HTML),
        (b"<p>hello</p>", "page.htm", parsing.HTML),
        (b"# Title\n\ntext", "notes.md", parsing.MARKDOWN),
        (b"plain words", "notes.txt", parsing.TEXT),
        (b"plain words", None, parsing.TEXT),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "photo.png", None),
        (b"\xff\xfe\xfa bad utf-8 \xff" + b"x" * 20, "bad.txt", None),
        ("caf\u00e9".encode()[:-1], "cut.txt", parsing.TEXT),  # a character cut at the end
    ],
)
def test_the_type_is_read_from_the_bytes(head: bytes, name: str | None, expected: str) -> None:
    assert parsing.sniff(head, name) == expected


def test_chunks_know_their_pages_and_heading_path() -> None:
    pages = ["# Install\n\n## Linux\n\n" + "apt install kettle. " * 20, "## Windows\n\nRun setup."]
    text, chunks = chunk(Parsed(pages, paged=True), min_chars=100, max_chars=200)
    assert text == pages[0] + "\n\n" + pages[1]
    assert chunks[0].page_start == 1 and chunks[0].heading == "Install > Linux"
    last = chunks[-1]
    assert (last.page_start, last.page_end) == (2, 2)
    assert last.heading == "Install > Windows"
    for piece in chunks:
        assert text[piece.char_start : piece.char_end] == piece.text
    assert len({piece.content_hash for piece in chunks}) == len(chunks)


def test_formats_without_pages_have_no_page_numbers() -> None:
    _, chunks = chunk(Parsed(["Just one line."], paged=False), min_chars=50, max_chars=100)
    assert [(c.page_start, c.page_end, c.heading) for c in chunks] == [(None, None, None)]


def test_a_question_becomes_quoted_words_with_no_query_syntax() -> None:
    words = search.terms('How do I "descale" the kettle? NEAR(kettle) AND -vinegar* OR x:y')
    assert words == ["descale", "kettle", "vinegar", "x", "y"]
    assert search.fts5_query(["descale", "kettle"]) == '"descale" OR "kettle"'
    assert search.terms("the of and ?!") == []
    assert len(search.terms(" ".join(f"w{i}" for i in range(100)))) == search.MAX_TERMS


def test_headings_at_the_very_end_still_make_a_chunk() -> None:
    text, chunks = chunk(Parsed(["Body text here.\n\n# Appendix"], paged=False), 10, 16)
    assert chunks[-1].text.endswith("# Appendix")
    assert text[chunks[-1].char_start : chunks[-1].char_end] == chunks[-1].text


def test_a_url_s_last_segment_names_a_type_only_with_a_known_extension() -> None:
    assert parsing.known_name("manual.pdf") == "manual.pdf"
    assert parsing.known_name("page.php") is None
    assert parsing.known_name("latest") is None


def test_a_json_body_with_a_url_is_the_url_kind() -> None:
    from app.knowledge.router import _has_url

    assert _has_url(b'{"url": "https://example.com/a.pdf"}')
    assert not _has_url(b'{"title": "t", "text": "x"}')
    assert not _has_url(b"not json")
    assert not _has_url(b'["url"]')


def test_upload_file_names_are_stored_without_nul_and_cut_to_the_column() -> None:
    from starlette.datastructures import UploadFile

    from app.knowledge.service import _filename

    assert _filename(UploadFile(io.BytesIO(b""), filename="a\x00b.pdf")) == "ab.pdf"
    assert _filename(UploadFile(io.BytesIO(b""), filename="x" * 300)) == "x" * 255
    assert _filename(UploadFile(io.BytesIO(b""), filename="  ")) is None


def test_upload_routes_get_their_own_body_limit() -> None:
    import re

    from app.core.middleware import _matches
    from app.knowledge.router import UPLOAD_PATH

    pattern = re.compile(UPLOAD_PATH)
    assert _matches(pattern, "/projects/abc/knowledge/documents")
    assert _matches(pattern, "/projects/abc/knowledge/documents/def/file")
    assert not _matches(pattern, "/projects/abc/knowledge/documents/def")
    assert not _matches(pattern, "/projects/abc/knowledge/retrieve")
    assert _matches("/webhooks/", "/webhooks/meta/1")
