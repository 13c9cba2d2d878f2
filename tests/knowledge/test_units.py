"""The pure parts of knowledge bases: type sniffing, chunk pages and heading paths, how a
question becomes a keyword query, and how sources are chosen and cited in a turn."""

from __future__ import annotations

import io
import uuid

import httpx
import numpy as np
import pytest

from app.core.errors import ValidationFailedError
from app.knowledge import parsing, retrieval, search, vectors
from app.knowledge.chunking import chunk
from app.knowledge.grounding import (
    CITING_PROMPT,
    Grounding,
    citations,
    citing_prompt,
    select_sources,
)
from app.knowledge.limits import check_overrides, limits_of
from app.knowledge.parsing import Parsed
from app.knowledge.schemas import KnowledgeSettings
from app.llm import embeddings
from app.llm.base import LLMNotConfiguredError
from app.llm.providers.echo import EchoProvider
from app.llm.resilience import BreakerBoard, ResilientProvider, RetryPolicy, Target
from app.llm.types import EmbeddingRequest
from tests.conftest import make_settings


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


def _hit(text: str, score: float, **fields: object) -> search.Hit:
    values: dict[str, object] = {
        "public_id": uuid.uuid4(),
        "document_id": uuid.uuid4(),
        "title": "Manual",
        "text": text,
        "position": 0,
        "page_start": None,
        "page_end": None,
        "char_start": 0,
        "char_end": len(text),
        "heading": None,
        "score": score,
    }
    return search.Hit(**(values | fields))  # type: ignore[arg-type]


def test_a_project_s_knowledge_setting_decides_whether_turns_are_grounded() -> None:
    assert Grounding.of(None) is None
    assert Grounding.of({}) is None
    assert Grounding.of({"enabled": False, "top_k": 9}) is None
    assert Grounding.of({"max_pages": 3}) is None  # limits alone
    assert Grounding.of({"enabled": True}) == Grounding(4, 1500, None)
    assert Grounding.of({"enabled": True, "top_k": 2, "min_score": 0.5}) == Grounding(2, 1500, 0.5)


def test_sources_keep_to_the_score_floor_and_the_token_budget() -> None:
    hits = [_hit("a" * 400, 3.0), _hit("b" * 400, 2.0), _hit("c" * 400, 1.0)]
    both = select_sources(hits, Grounding(top_k=3, max_context_tokens=200))  # 800 characters
    assert [(s.n, s.text[0]) for s in both] == [(1, "a"), (2, "b")]
    floor = select_sources(hits, Grounding(top_k=3, max_context_tokens=1000, min_score=1.5))
    assert [s.text[0] for s in floor] == ["a", "b"]
    # A first hit longer than the budget is cut to it; a later one is left out instead.
    long = [_hit("word " * 300, 2.0), _hit("x" * 2000, 1.0)]
    [cut] = select_sources(long, Grounding(top_k=2, max_context_tokens=100))
    assert len(cut.text) <= 400 and cut.text.endswith("…")
    assert select_sources([], Grounding(top_k=2, max_context_tokens=100)) == []


def test_the_citing_prompt_numbers_its_sources_with_their_pages() -> None:
    hits = [
        _hit("Descale monthly.", 2.0, page_start=3, page_end=3, heading="Care > Descaling"),
        _hit("Two year warranty.", 1.0, page_start=4, page_end=5),
        _hit("Plain text.", 0.5, title="Notes"),
    ]
    sources = select_sources(hits, Grounding(top_k=3, max_context_tokens=1000))
    prompt = citing_prompt(sources)
    assert prompt.startswith(CITING_PROMPT)
    assert "[1] Manual, page 3 (Care > Descaling)\nDescale monthly." in prompt
    assert "[2] Manual, pages 4-5\nTwo year warranty." in prompt
    assert "[3] Notes\nPlain text." in prompt
    stored = citations(sources)
    assert stored is not None and [c["n"] for c in stored] == [1, 2, 3]
    assert stored[0]["document_id"] == str(hits[0].document_id)
    assert stored[0]["chunk_id"] == str(hits[0].public_id)
    assert (stored[1]["page_start"], stored[1]["page_end"]) == (4, 5)
    assert citations([]) is None


def test_a_project_s_limits_may_lower_the_deployment_s_but_not_raise_them() -> None:
    settings = make_settings("sqlite+aiosqlite://", KNOWLEDGE_MAX_PAGES=100)
    assert limits_of(settings, None).max_pages == 100
    assert limits_of(settings, {"max_pages": 7}).max_pages == 7
    assert limits_of(settings, {"max_pages": 700}).max_pages == 100  # a stored one, if lowered
    check_overrides(settings, KnowledgeSettings(max_pages=100, max_documents=None))
    with pytest.raises(ValidationFailedError) as refused:
        check_overrides(settings, KnowledgeSettings(max_pages=101))
    assert refused.value.details[0]["field"] == "knowledge.max_pages"


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    a, b, c, d = (_hit(n, 1.0) for n in "abcd")
    fused = vectors.fuse([[a, b, c], [c, d, a]], limit=3)
    assert [(hit.text, ranks) for hit, ranks in fused] == [
        ("a", [1, 3]),  # 1/61 + 1/63
        ("c", [3, 1]),  # the same sum: the first ranking's order breaks the tie
        ("b", [2, None]),
    ]
    assert fused[0][0].score == pytest.approx(1 / 61 + 1 / 63)
    assert vectors.fuse([[], []], limit=5) == []


def test_vectors_keep_their_values_in_bytes_and_unit_length() -> None:
    vector = embeddings.unit(np.asarray([3.0, 4.0], dtype=np.float32))
    assert vector.tolist() == pytest.approx([0.6, 0.8])
    assert vectors.decode(vectors.encode(vector), 2).tolist() == vector.tolist()
    assert embeddings.unit(np.zeros(3, dtype=np.float32)).tolist() == [0.0, 0.0, 0.0]


def test_the_vector_cache_keeps_the_recently_used_blocks_within_its_size() -> None:
    def block(rows: int) -> vectors._Block:
        return vectors._Block(np.arange(rows, dtype=np.int64), np.ones((rows, 4), dtype=np.float32))

    one = block(10).nbytes  # 10 ids of 8 bytes and 10 x 4 floats of 4: 240
    cache = vectors.VectorCache(max_bytes=2 * one)
    cache.put(("a",), block(10))
    cache.put(("b",), block(10))
    assert cache.get(("a",)) is not None  # now the most recent
    cache.put(("c",), block(10))
    assert cache.get(("b",)) is None and cache.get(("a",)) and cache.get(("c",))
    assert cache.size == 2 * one
    cache.put(("huge",), block(100))  # larger than the whole cache: not kept
    assert cache.get(("huge",)) is None and cache.size == 2 * one


def test_an_embedder_exists_only_with_a_base_url() -> None:
    client = httpx.AsyncClient()
    shared = (BreakerBoard(threshold=5, cooldown=1), RetryPolicy())
    assert embeddings.build_embedder(make_settings("sqlite://"), client, *shared) is None
    embedder = embeddings.build_embedder(
        make_settings(
            "sqlite://",
            EMBEDDINGS_BASE_URL="http://embed.test/v1",
            EMBEDDINGS_MODEL="m",
            EMBEDDINGS_QUERY_TIMEOUT_SECONDS=2.5,
        ),
        client,
        *shared,
    )
    assert embedder is not None and embedder.model == "m"
    assert embedder.query_policy.total_timeout == 2.5


async def test_a_provider_that_cannot_embed_is_not_configured_for_it() -> None:
    resilient = ResilientProvider(
        [Target(EchoProvider(), "echo")], RetryPolicy(), BreakerBoard(threshold=5, cooldown=1)
    )
    with pytest.raises(LLMNotConfiguredError):
        await resilient.embed(EmbeddingRequest("echo", ("text",)))


def test_the_search_method_defaults_to_hybrid_with_embeddings() -> None:
    assert retrieval.method_of(None, None) == "keyword"
    assert retrieval.method_of("keyword", object()) == "keyword"  # type: ignore[arg-type]
    assert retrieval.method_of(None, object()) == "hybrid"  # type: ignore[arg-type]
    retrieval.check_method("keyword", False, "search_method")
    retrieval.check_method(None, False, "search_method")
    with pytest.raises(ValidationFailedError) as raised:
        retrieval.check_method("semantic", False, "knowledge.search_method")
    assert raised.value.code == "embeddings_not_configured"
