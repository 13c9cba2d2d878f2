"""Knowledge-base retrieval: how often the answer is found, how fast, and how fast PDFs index.

The corpus is documentation that installs from Debian's packages: the Python 3.11 manual
(`apt-get install python3.11-doc`, /usr/share/doc/python3.11/html). Every `<section>` of its
library reference, tutorial, how-tos, language reference and FAQ with at least MIN_SECTION_CHARS
characters of its own text is a section (about 2,400). Each manual page becomes one document,
its sections in order, rendered twice: as plain HTML (a heading and paragraphs per section: the
manual's navigation and sidebars are left out) and as a PDF (fpdf2, the page each paragraph lands
on recorded). Both go through the real API: uploaded, parsed and chunked by the indexing worker,
searched with `POST /projects/{id}/knowledge/retrieve`.

Queries (`--queries`, default 300) are known-item queries made from the corpus, as in Azzopardi
et al., "Building simulated queries for known-item topics" (SIGIR 2007): a random section, a
sentence of it with at least 10 words, and a random 60% of that sentence's content words (4 to
8 of them, in their order), no stop word. The answer is that sentence: a hit is correct when
it is a chunk of the same document whose text holds the sentence's first or last 7 words
(whitespace aside; a sentence may straddle two chunks). This tests lexical retrieval (the words
are the document's own) with the ambiguity of a partial query; it does not test paraphrase.

Figures:
- recall@1/5/10 and MRR@10 per format (HTML, PDF);
- page accuracy: of the queries whose first hit (PDF) is correct, the share whose cited page
  range holds the page the sentence is on;
- indexing throughput: PDF pages over the seconds from the first upload to the last document
  ready (the worker in the API process, default settings; or, with `--separate-worker [N]`,
  in N `python -m app.worker` processes beside it, as docker-compose runs them); when the
  last upload was accepted is reported too (`uploaded_seconds`): uploads and indexing share
  the cores. With `--upload-first` the workers start once every file is uploaded, and the
  seconds are those from their start (their startup included) to the last document ready.
  Where the CPU went meanwhile is reported too (Linux's /proc): the API process, the worker
  processes, the parsers (their children: the forkserver and the parser processes), the
  bench, and the whole machine (the rest of it is mostly Postgres);
- retrieval latency p50/p95 (the whole `POST .../retrieve`, sequential) at 10,000 and 100,000
  chunks: the PDF project's chunks copied (documents and chunks, and on Postgres their term
  counts) into another project until it holds that many, then ANALYZE (as autovacuum would
  soon). Copies repeat the same text, so a term's chunk count grows with them: harder than
  100,000 distinct chunks, not easier.

    .venv/bin/python -m tests.bench.retrieval
    .venv/bin/python -m tests.bench.retrieval --database-url sqlite --queries 100 --json
    .venv/bin/python -m tests.bench.retrieval --indexing-only --separate-worker

Postgres by default (a throwaway database `bench_<random>` on the server given); `sqlite`
uses a file in the temporary directory.

Semantic and hybrid search are measured too when an embedding model is given:
`--embeddings-url URL --embeddings-model NAME` (any OpenAI-compatible `/embeddings`; the key in
EMBEDDINGS_API_KEY), or `--embeddings fake`: the fake upstream of the tests (tests/fake_openai.py,
hashed character trigrams: no model, no download; it measures the machinery, not a model's
quality). The documents are then also waited for until every chunk is embedded
(`embedded_seconds`), every query is asked by `keyword`, `semantic` and `hybrid`, and latency
at scale is timed by `keyword` and `hybrid` (the vectors are copied with their chunks).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import random
import re
import secrets
import sys
import time
import unicodedata
import uuid
from asyncio.subprocess import Process
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from selectolax.lexbor import LexborHTMLParser as HTMLParser
from selectolax.lexbor import LexborNode as Node
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.bench.chat_load import DEFAULT_DATABASE_URL
from tests.bench.stream_ttfd import (
    HOST,
    LOOPBACK,
    BenchError,
    free_port,
    postgres_admin,
    run_bench,
    sign_up,
    spawn,
    stop,
    summary,
    tail,
    wait_ready,
)

DOCS = Path("/usr/share/doc/python3.11/html")
PARTS = ("library", "tutorial", "howto", "reference", "faq")
MIN_SECTION_CHARS = 200
MIN_SENTENCE_WORDS = 10
WINDOW = 7  # words of the answer sentence a correct chunk must hold
TOP_K = 10
SCALES = (10_000, 100_000)
UPLOAD_CONCURRENCY = 4
STOP = frozenset(
    """a an and are as at be by can do does for from has have how i if in into is it its of on
    or not no the this that these those to was what when where which who why will with you
    your may must should would could then than there their they them also any all each such
    only other some so but use used using""".split()  # noqa: SIM905 - a word list
)
NEXT_LINE: dict[str, Any] = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]+")


@dataclass
class Paragraph:
    text: str
    pages: tuple[int, int] = (0, 0)  # in the PDF, set when it is rendered


@dataclass
class Section:
    document: int  # index into the documents
    heading: str
    paragraphs: list[Paragraph]


@dataclass
class Document:
    name: str  # e.g. "library/os"
    title: str
    sections: list[Section] = field(default_factory=list)


@dataclass
class Query:
    text: str
    document: int
    sentence: str
    pages: tuple[int, int]


def plain(value: str) -> str:
    """Whitespace collapsed, and only Latin-1 (fpdf2's core fonts): the corpus's own text is
    normalised once, so the HTML, the PDF and the queries all use the same."""
    value = unicodedata.normalize("NFKC", value).replace("¶", "")
    value = value.encode("latin-1", "replace").decode("latin-1")
    return " ".join(value.split())


def own_text(section: Node) -> tuple[str, list[str]]:
    """A `<section>`'s heading and its paragraphs, not those of the sections inside it."""
    heading, paragraphs = "", []
    for child in section.iter():
        if child.tag == "section":
            continue
        if child.tag in ("h1", "h2", "h3", "h4", "h5", "h6") and not heading:
            heading = plain(child.text(separator=" "))
            continue
        words = plain(child.text(separator=" "))
        if words:
            paragraphs.append(words)
    return heading, paragraphs


def load_corpus(root: Path) -> list[Document]:
    documents: list[Document] = []
    for part in PARTS:
        for path in sorted((root / part).glob("*.html")):
            tree = HTMLParser(path.read_bytes())
            title = plain(tree.css_first("title").text()) if tree.css_first("title") else path.stem
            document = Document(f"{part}/{path.stem}", title.split(" — ")[0])
            for node in tree.css("section[id]"):
                heading, paragraphs = own_text(node)
                if sum(map(len, paragraphs)) >= MIN_SECTION_CHARS:
                    texts = [Paragraph(p) for p in paragraphs]
                    document.sections.append(Section(len(documents), heading or title, texts))
            if document.sections:
                documents.append(document)
    return documents


def render_html(document: Document) -> bytes:
    parts = [f"<!DOCTYPE html><html><head><title>{html.escape(document.title)}</title></head>"]
    parts.append(f"<body><h1>{html.escape(document.title)}</h1>")
    for section in document.sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        parts.extend(f"<p>{html.escape(p.text)}</p>" for p in section.paragraphs)
    parts.append("</body></html>")
    return "".join(parts).encode()


def render_pdf(document: Document) -> tuple[bytes, int]:
    """The PDF, and its page count; each paragraph's pages are recorded on it."""
    pdf = FPDF()
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.multi_cell(0, 9, document.title, **NEXT_LINE)
    for section in document.sections:
        pdf.set_font("helvetica", "B", 13)
        pdf.multi_cell(0, 7, section.heading, **NEXT_LINE)
        pdf.set_font("helvetica", size=10)
        for paragraph in section.paragraphs:
            start = pdf.page_no()
            pdf.multi_cell(0, 5, paragraph.text, **NEXT_LINE)
            paragraph.pages = (start, pdf.page_no())
            pdf.ln(2)
    return bytes(pdf.output()), pdf.page_no()


def make_queries(documents: list[Document], count: int, seed: int) -> list[Query]:
    rng = random.Random(seed)
    sections = [s for d in documents for s in d.sections]
    queries: list[Query] = []
    for _ in range(count * 50):
        if len(queries) == count:
            break
        section = rng.choice(sections)
        paragraph = rng.choice(section.paragraphs)
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", paragraph.text) if s]
        sentence = rng.choice(sentences)
        if len(sentence.split()) < MIN_SENTENCE_WORDS:
            continue
        words = [w for w in _WORD.findall(sentence) if w.lower() not in STOP]
        if len(words) < 4:
            continue
        keep = max(4, min(8, round(len(words) * 0.6)))
        picked = sorted(rng.sample(range(len(words)), keep))
        text_ = " ".join(words[i] for i in picked)
        queries.append(Query(text_, section.document, sentence, paragraph.pages))
    if len(queries) < count:
        raise BenchError(f"only {len(queries)} queries could be made from the corpus")
    return queries


def correct(hit: dict[str, Any], query: Query, document_ids: list[str]) -> bool:
    if hit["document"]["id"] != document_ids[query.document]:
        return False
    chunk = " ".join(hit["chunk"]["text"].split())
    words = query.sentence.split()
    return " ".join(words[:WINDOW]) in chunk or " ".join(words[-WINDOW:]) in chunk


# --- the API -----------------------------------------------------------------------------


@dataclass
class Api:
    url: str
    client: httpx.AsyncClient
    headers: dict[str, str]

    async def post(self, path: str, **kwargs: Any) -> Any:
        response = await self.client.post(f"{self.url}{path}", headers=self.headers, **kwargs)
        if response.status_code >= 300:
            raise BenchError(f"POST {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(f"{self.url}{path}", headers=self.headers, params=params)
        if response.status_code >= 300:
            raise BenchError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return response.json()


async def upload_all(api: Api, project: str, files: list[tuple[str, bytes]]) -> list[str]:
    """Upload every file (UPLOAD_CONCURRENCY at a time); the document ids, in order."""
    limit = asyncio.Semaphore(UPLOAD_CONCURRENCY)

    async def one(name: str, content: bytes) -> str:
        async with limit:
            made = await api.post(
                f"/projects/{project}/knowledge/documents",
                files={"file": (name, content, "application/octet-stream")},
            )
            return str(made["id"])

    return list(await asyncio.gather(*(one(n, c) for n, c in files)))


async def wait_indexed(api: Api, project: str, count: int, seconds: float) -> dict[str, Any]:
    """Until no document of the project is queued or indexing; its documents' totals."""
    deadline = time.monotonic() + seconds
    while True:
        pending = 0
        for status in ("queued", "indexing"):
            page = await api.get(f"/projects/{project}/knowledge/documents", status=status, limit=1)
            pending += len(page["items"])
        if not pending:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"indexing took over {seconds:g} s")
        await asyncio.sleep(0.25)
    totals = {"documents": 0, "ready": 0, "failed": 0, "pages": 0, "chunks": 0}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = await api.get(f"/projects/{project}/knowledge/documents", **params)
        for document in page["items"]:
            totals["documents"] += 1
            totals[document["status"]] = totals.get(document["status"], 0) + 1
            totals["pages"] += document["page_count"] or 0
            totals["chunks"] += document["chunk_count"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if totals["documents"] != count:
        raise BenchError(f"{totals['documents']} documents listed, {count} uploaded")
    return totals


async def ask(
    api: Api, project: str, query: Query, method: str = "keyword"
) -> tuple[list[dict[str, Any]], float]:
    started = time.perf_counter()
    found = await api.post(
        f"/projects/{project}/knowledge/retrieve",
        json={"query": query.text, "top_k": TOP_K, "search_method": method},
    )
    if found["search_method"] != method:  # the question could not be embedded
        raise BenchError(f"asked {method}, searched {found['search_method']}")
    return list(found["records"]), (time.perf_counter() - started) * 1000


async def wait_embedded(api: Api, project: str, seconds: float) -> int:
    """Until every chunk of the project's documents has a vector; how many there are."""
    deadline = time.monotonic() + seconds
    while True:
        chunks = embedded = 0
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
            page = await api.get(f"/projects/{project}/knowledge/documents", **params)
            for document in page["items"]:
                chunks += document["chunk_count"]
                embedded += document["chunks_embedded"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if embedded >= chunks:
            return embedded
        if time.monotonic() > deadline:
            raise BenchError(f"embedding took over {seconds:g} s ({embedded} of {chunks})")
        await asyncio.sleep(0.5)


def quality(
    results: list[list[dict[str, Any]]], queries: list[Query], ids: list[str], paged: bool
) -> dict[str, Any]:
    ranks: list[int | None] = []
    page_right = page_asked = 0
    for records, query in zip(results, queries, strict=True):
        rank = next((i for i, r in enumerate(records) if correct(r, query, ids)), None)
        ranks.append(rank)
        if paged and rank == 0:
            page_asked += 1
            chunk = records[0]["chunk"]
            low, high = query.pages
            if chunk["page_start"] is not None and chunk["page_start"] <= high:
                page_right += int((chunk["page_end"] or chunk["page_start"]) >= low)
    total = len(queries)
    out: dict[str, Any] = {
        f"recall@{k}": round(sum(1 for r in ranks if r is not None and r < k) / total, 3)
        for k in (1, 5, 10)
    }
    out["mrr@10"] = round(sum(1 / (r + 1) for r in ranks if r is not None) / total, 3)
    if paged:
        out["page_accuracy"] = round(page_right / page_asked, 3) if page_asked else None
    return out


# --- copies for the latency at scale ------------------------------------------------------


async def copy_chunks(database_url: URL, source: str, target: str, chunks: int) -> int:
    """Copy the source project's documents and chunks into the target project until it holds
    at least `chunks` chunks; the count it holds."""
    engine = create_async_engine(database_url)
    postgres = database_url.get_backend_name() == "postgresql"

    def ident(value: str | uuid.UUID) -> str:  # how each database stores a uuid
        return str(value) if postgres else uuid.UUID(str(value)).hex

    source, target = ident(source), ident(target)
    try:
        async with engine.begin() as connection:
            held = int(
                await connection.scalar(
                    text("SELECT count(*) FROM kb_chunks WHERE project_id = :p"), {"p": target}
                )
                or 0
            )
            documents = (
                await connection.execute(
                    text("SELECT id, chunk_count FROM kb_documents WHERE project_id = :p"),
                    {"p": source},
                )
            ).all()
            while held < chunks:
                for document_id, count in documents:
                    if held >= chunks:
                        break
                    params = {"new": ident(uuid.uuid4()), "old": document_id, "target": target}
                    await connection.execute(_COPY_DOCUMENT, params)
                    await connection.execute(
                        _COPY_CHUNKS_PG if postgres else _COPY_CHUNKS_SQLITE, params
                    )
                    await connection.execute(_COPY_EMBEDDINGS, params)
                    held += count
            if postgres:
                await connection.execute(
                    text("DELETE FROM kb_terms WHERE project_id = :p"), {"p": target}
                )
                await connection.execute(_TERMS, {"p": target})
                # What autovacuum does within a minute of such a bulk insert; measured before
                # it, a search may be planned on the statistics of a far smaller table.
                await connection.execute(
                    text("ANALYZE kb_chunks, kb_documents, kb_terms, kb_embeddings")
                )
            return held
    finally:
        await engine.dispose()


_DOCUMENT_COLUMNS = (
    "workspace_id, title, source, filename, source_url, mime_type, size_bytes, sha256, "
    "metadata, enabled, status, error_code, error_message, page_count, char_count, "
    "chunk_count, chunks_embedded, index_version, indexed_at, created_by, created_at, "
    "updated_at"
)
_COPY_DOCUMENT = text(
    f"INSERT INTO kb_documents (id, project_id, {_DOCUMENT_COLUMNS}) "  # noqa: S608 - constants
    f"SELECT :new, :target, {_DOCUMENT_COLUMNS} FROM kb_documents WHERE id = :old"
)
_CHUNK_COLUMNS = (
    "workspace_id, version, position, text, content_hash, char_start, char_end, "
    "page_start, page_end, heading"
)
_COPY_CHUNKS_PG = text(
    f"INSERT INTO kb_chunks (public_id, project_id, document_id, {_CHUNK_COLUMNS}) "  # noqa: S608
    f"SELECT gen_random_uuid(), :target, :new, {_CHUNK_COLUMNS} FROM kb_chunks "
    "WHERE document_id = :old"
)
_COPY_CHUNKS_SQLITE = text(
    f"INSERT INTO kb_chunks (public_id, project_id, document_id, {_CHUNK_COLUMNS}) "  # noqa: S608
    f"SELECT lower(hex(randomblob(16))), :target, :new, {_CHUNK_COLUMNS} FROM kb_chunks "
    "WHERE document_id = :old"
)
_COPY_EMBEDDINGS = text(
    "INSERT INTO kb_embeddings (chunk_id, model, document_id, dims, vector, workspace_id) "
    "SELECT n.id, e.model, n.document_id, e.dims, e.vector, e.workspace_id "
    "FROM kb_chunks AS o JOIN kb_embeddings AS e ON e.chunk_id = o.id "
    "JOIN kb_chunks AS n ON n.document_id = :new AND n.version = o.version "
    "AND n.position = o.position WHERE o.document_id = :old"
)
_TERMS = text(
    "INSERT INTO kb_terms (project_id, term, workspace_id, chunks) "
    "SELECT c.project_id, t.lexeme, c.workspace_id, count(*) "
    "FROM kb_chunks AS c, unnest(c.tsv) AS t WHERE c.project_id = :p "
    "GROUP BY c.project_id, c.workspace_id, t.lexeme"
)


# --- the run -------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if not args.docs.is_dir():
        raise BenchError(f"{args.docs} is missing: apt-get install python3.11-doc")
    started = time.monotonic()
    documents = load_corpus(args.docs)
    if args.documents:
        documents = documents[: args.documents]
    sections = sum(len(d.sections) for d in documents)
    pdfs = [render_pdf(d) for d in documents]  # records the paragraphs' pages first
    queries = make_queries(documents, args.queries, args.seed)
    html_files = [(f"{d.name.replace('/', '-')}.html", render_html(d)) for d in documents]
    pdf_files = [
        (f"{d.name.replace('/', '-')}.pdf", content)
        for d, (content, _) in zip(documents, pdfs, strict=True)
    ]
    log(
        f"corpus: {len(documents)} documents, {sections} sections, "
        f"{sum(p for _, p in pdfs)} PDF pages, {len(queries)} queries"
    )

    postgres = args.database_url != "sqlite"
    if postgres:
        admin = make_url(args.database_url)
        if admin.host not in LOOPBACK:
            raise BenchError(f"refusing a non-loopback database host: {admin.host}")
        database_url = admin.set(database=f"bench_{secrets.token_hex(6)}")
        await postgres_admin(admin, f'CREATE DATABASE "{database_url.database}"')
    else:
        database_url = make_url(f"sqlite+aiosqlite:///{workdir / 'bench.db'}")
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "ENVIRONMENT": "development",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "REGISTRATIONS_PER_IP_PER_HOUR": "0",
        "LOGIN_ATTEMPTS_PER_IP_PER_MINUTE": "0",
        "RATE_LIMIT_USER_PER_MINUTE": "100000000",
        "KNOWLEDGE_MAX_DOCUMENTS_PER_PROJECT": "100000",
        "KNOWLEDGE_MAX_BYTES_PER_PROJECT": str(10**11),
        "LOG_LEVEL": "WARNING",
    }
    if args.separate_worker:  # the API answers; `python -m app.worker` indexes
        env |= {"WORKERS_IN_API": "false", "JOBS_POLL_SECONDS": "0.1"}
    methods = ["keyword"]
    processes = []
    try:
        if args.embeddings == "fake":
            fake_port = free_port()
            fake = [
                *(sys.executable, "-m", "uvicorn", "--factory", "--host", HOST),
                *("--port", str(fake_port), "--no-access-log", "tests.fake_openai:create_app"),
            ]
            fake_env = {"PATH": env["PATH"], "FAKE_OPENAI_RECORD": "0"}
            processes.append(await spawn("embeddings", fake, fake_env, workdir))
            args.embeddings_url = f"http://{HOST}:{fake_port}/v1"
        if args.embeddings_url:
            env |= {
                "EMBEDDINGS_BASE_URL": args.embeddings_url,
                "EMBEDDINGS_MODEL": args.embeddings_model,
                "EMBEDDINGS_API_KEY": os.environ.get("EMBEDDINGS_API_KEY", ""),
            }
            methods += ["semantic", "hybrid"]
        migrate = await spawn(
            "alembic", [sys.executable, "-m", "alembic", "upgrade", "head"], env, workdir
        )
        processes.append(migrate)
        if await asyncio.wait_for(migrate.wait(), 120) != 0:
            raise BenchError(f"migrations failed:\n{tail(workdir, 'alembic')}")
        command = [
            *(sys.executable, "-m", "uvicorn", "--factory", "--host", HOST, "--port", str(port)),
            *("--no-access-log", "--loop", "uvloop", "--http", "httptools", "app.main:create_app"),
        ]
        processes.append(api_process := await spawn("api", command, env, workdir))
        workers: list[Process] = []

        async def start_workers(phase: str) -> None:
            for n in range(args.separate_worker):
                worker = [sys.executable, "-m", "app.worker"]
                workers.append(await spawn(f"worker-{phase}{n}", worker, env, workdir))
            processes.extend(workers)

        if not args.upload_first:
            await start_workers("")
        url = f"http://{HOST}:{port}"
        timeout = httpx.Timeout(120.0)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            await wait_ready(client, f"{url}/ready", api_process, "api", 60)
            if args.embeddings == "fake":
                fake_url = args.embeddings_url.removesuffix("/v1")
                await wait_ready(client, f"{fake_url}/_control/requests", processes[0], "fake", 60)
            api = Api(url, client, await sign_up(client, url))
            projects = {}
            for name in ("html", "pdf", "scale"):
                projects[name] = str(
                    (await api.post("/projects", json={"name": f"bench {name}"}))["id"]
                )

            indexing: dict[str, Any] = {}
            ids: dict[str, list[str]] = {}
            for kind, files in (("html", html_files), ("pdf", pdf_files)):
                log(f"indexing {len(files)} {kind.upper()} documents")
                roles = {"api": [api_process.pid], "workers": [w.pid for w in workers]}
                cpu = process_seconds(roles)
                cpu["bench"] = time.process_time()
                cpu["machine"] = machine_busy_seconds()
                began = time.perf_counter()
                ids[kind] = await upload_all(api, projects[kind], files)
                uploaded = time.perf_counter() - began
                if args.upload_first:  # the workers start now: indexing alone is timed
                    await start_workers(kind)
                    roles["workers"] = [w.pid for w in workers]
                totals = await wait_indexed(api, projects[kind], len(files), args.timeout)
                seconds = time.perf_counter() - began
                totals["seconds"] = round(seconds - (uploaded if args.upload_first else 0), 1)
                totals["uploaded_seconds"] = round(uploaded, 1)  # all 202s by then
                cpu = {r: c - cpu.get(r, 0) for r, c in process_seconds(roles).items()} | {
                    "bench": time.process_time() - cpu["bench"],
                    "machine": machine_busy_seconds() - cpu["machine"],
                }
                totals["cpu_seconds"] = {r: round(c, 1) for r, c in cpu.items()}
                if kind == "pdf":
                    totals["pages_per_second"] = round(totals["pages"] / totals["seconds"], 1)
                if len(methods) > 1:
                    await wait_embedded(api, projects[kind], args.timeout)
                    totals["embedded_seconds"] = round(time.perf_counter() - began, 1)
                indexing[kind] = totals
                if args.upload_first:  # the next phase's uploads run alone too
                    for worker in workers:
                        await stop(worker)
                    workers.clear()

            figures: dict[str, Any] = {}
            for method in [] if args.indexing_only else methods:
                for kind in ("html", "pdf"):
                    log(f"{len(queries)} {method} queries on the {kind.upper()} project")
                    results = [(await ask(api, projects[kind], q, method))[0] for q in queries]
                    figures[f"{kind} {method}"] = quality(
                        results, queries, ids[kind], paged=kind == "pdf"
                    )

            latency: dict[str, Any] = {}
            for scale in [] if args.indexing_only else SCALES:
                held = await copy_chunks(database_url, projects["pdf"], projects["scale"], scale)
                for method in methods:
                    if method == "semantic":
                        continue  # hybrid runs it, and keyword search beside it
                    log(f"{method} latency at {held:,} chunks")
                    for query in queries[:20]:  # warm-up (and, by meaning, the vector cache)
                        await ask(api, projects["scale"], query, method)
                    times = [(await ask(api, projects["scale"], q, method))[1] for q in queries]
                    latency[f"{scale} {method}"] = {
                        "chunks": held,
                        "method": method,
                        **summary(times),
                    }
    finally:
        for process in reversed(processes):
            await stop(process)
        if postgres and args.keep_database:
            log(f"kept the database {database_url.database}")
        elif postgres:
            await postgres_admin(
                admin, f'DROP DATABASE IF EXISTS "{database_url.database}" WITH (FORCE)'
            )
    return {
        "database": "postgresql" if postgres else "sqlite",
        "corpus": {
            "source": str(args.docs),
            "documents": len(documents),
            "sections": sections,
            "queries": len(queries),
            "seed": args.seed,
            "separate_worker": args.separate_worker,
            "embeddings": args.embeddings_url and f"{args.embeddings_model} ({args.embeddings})",
        },
        "indexing": indexing,
        "quality": figures,
        "latency_ms": latency,
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }


def process_seconds(roles: dict[str, list[int]]) -> dict[str, float]:
    """The CPU time (user and system) of each role's processes, and under `parsers` that of
    all their descendants, live or reaped (the forkserver and the parser processes); one
    reading of Linux's /proc."""
    children: dict[int, list[int]] = {}
    own: dict[int, float] = {}
    reaped: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # after the command's name
        pid, tick = int(entry), os.sysconf("SC_CLK_TCK")
        children.setdefault(int(fields[1]), []).append(pid)
        own[pid] = (int(fields[11]) + int(fields[12])) / tick
        reaped[pid] = (int(fields[13]) + int(fields[14])) / tick
    seconds = {r: sum(own.get(p, 0.0) for p in pids) for r, pids in roles.items()}
    descendants = 0.0
    for pid in (p for pids in roles.values() for p in pids):
        descendants += reaped.get(pid, 0.0)
        stack = list(children.get(pid, []))
        while stack:
            child = stack.pop()
            descendants += own.get(child, 0.0) + reaped.get(child, 0.0)
            stack.extend(children.get(child, []))
    return seconds | {"parsers": descendants}


def machine_busy_seconds() -> float:
    """The machine's CPU time spent busy (not idle or waiting on I/O), over all its cores."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[retrieval] {message}", file=sys.stderr, flush=True)


def print_report(result: dict[str, Any]) -> None:
    corpus, indexing = result["corpus"], result["indexing"]
    print(f"## Retrieval benchmark ({result['database']})\n")
    print(
        f"Corpus: {corpus['documents']} documents, {corpus['sections']} sections of "
        f"{corpus['source']}; {corpus['queries']} queries (seed {corpus['seed']}).\n"
    )
    if corpus["embeddings"]:
        print(f"Embeddings: {corpus['embeddings']}.\n")
    print(
        "| format | documents | ready | chunks | pages | seconds | pages/s | embedded s "
        "| CPU s: API, workers, parsers, bench, machine |"
    )
    print("| --- | --: | --: | --: | --: | --: | --: | --: | --- |")
    for kind in ("html", "pdf"):
        i = indexing[kind]
        cpu = ", ".join(f"{c:g}" for c in i["cpu_seconds"].values())
        print(
            f"| {kind.upper()} | {i['documents']} | {i['ready']} | {i['chunks']} | "
            f"{i['pages'] or ''} | {i['seconds']} | {i.get('pages_per_second', '')} | "
            f"{i.get('embedded_seconds', '')} | {cpu} |"
        )
    print("\n| format, method | recall@1 | recall@5 | recall@10 | MRR@10 | page accuracy |")
    print("| --- | --: | --: | --: | --: | --: |")
    for name, q in result["quality"].items():
        print(
            f"| {name.upper()} | {q['recall@1']} | {q['recall@5']} | {q['recall@10']} | "
            f"{q['mrr@10']} | {q.get('page_accuracy', '')} |"
        )
    print("\n| chunks | method | p50 ms | p95 ms | mean ms |")
    print("| --: | --- | --: | --: | --: |")
    for f in result["latency_ms"].values():
        print(f"| {f['chunks']:,} | {f['method']} | {f['p50']} | {f['p95']} | {f['mean']} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.retrieval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="a Postgres server on loopback, or `sqlite`",
    )
    add("--docs", type=Path, default=DOCS, help="the Python manual's HTML")
    add("--queries", type=int, default=300)
    add("--documents", type=int, default=0, help="only the first N documents (0: all)")
    add("--seed", type=int, default=20261201)
    add("--timeout", type=float, default=3000.0, help="overall limit, seconds")
    add("--json", action="store_true")
    add("--indexing-only", action="store_true", help="index, then stop: no queries, no latency")
    add("--keep-database", action="store_true", help="Postgres: leave it for a look")
    add(
        "--separate-worker",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="N",
        help="index in N `python -m app.worker` processes (default 1; WORKERS_IN_API=false), "
        "as docker-compose runs them",
    )
    add(
        "--upload-first",
        action="store_true",
        help="with --separate-worker: start the workers once every file is uploaded, and time "
        "the indexing alone (from their start)",
    )
    add("--embeddings-url", help="an OpenAI-compatible /embeddings base URL (semantic, hybrid)")
    add("--embeddings-model", default="text-embedding-3-small")
    add(
        "--embeddings",
        choices=("none", "fake"),
        default="none",
        help="`fake`: start the tests' fake upstream and embed with it (hashed trigrams)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.queries <= 5000:
        parser.error("--queries must be 1..5000")
    if args.upload_first and not args.separate_worker:
        parser.error("--upload-first needs --separate-worker")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_bench("retrieval", bench, args)
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
