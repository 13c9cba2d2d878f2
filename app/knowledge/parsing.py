"""A document's text, page by page: PDF with PDFium (pypdfium2; not PyMuPDF, which is AGPL),
HTML with selectolax, DOCX with python-docx, Markdown and plain text as they are.

Headings come out as Markdown headings (`# Title`), so the chunker can split at them and give
each chunk its heading path. Parsing runs in a child process (app/knowledge/runner.py) with
memory and time limits: PDFium is native code, and a hostile
file may only fail its own job.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

PDF = "application/pdf"
HTML = "text/html"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MARKDOWN = "text/markdown"
TEXT = "text/plain"
TYPES = (PDF, HTML, DOCX, MARKDOWN, TEXT)
_BY_SUFFIX = {
    ".pdf": PDF,
    ".html": HTML,
    ".htm": HTML,
    ".docx": DOCX,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".txt": TEXT,
    ".text": TEXT,
}


class ParseError(Exception):
    """The file cannot be indexed; `code` is the document's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Parsed:
    pages: list[str]  # one entry for formats without pages
    paged: bool


def known_name(name: str) -> str | None:
    """`name` if its extension is one of the supported types' (a URL's last path segment:
    `page.php` says nothing about what it serves)."""
    return name if Path(name).suffix.lower() in _BY_SUFFIX else None


def sniff(head: bytes, filename: str | None) -> str | None:
    """The type, by the file's first bytes (and its name where the bytes allow several); None
    if it is none of the supported ones, or its name says another type (`photo.png`)."""
    suffix = Path(filename or "").suffix.lower()
    if suffix and suffix not in _BY_SUFFIX:
        return None
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        return DOCX if suffix in ("", ".docx") else None
    if b"\x00" in head:
        return None  # binary
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the end of the head
            return None
        text = head[: exc.start].decode("utf-8")
    start = text.lstrip("\ufeff \t\r\n")[:200].lower()
    if start.startswith(("<!doctype html", "<html")) or suffix in (".html", ".htm"):
        return HTML
    return MARKDOWN if _BY_SUFFIX.get(suffix) == MARKDOWN else TEXT


def parse(path: Path, mime_type: str, max_pages: int) -> Parsed:
    if mime_type == PDF:
        return Parsed(_pdf(path, max_pages), paged=True)
    data = path.read_bytes()
    if mime_type == DOCX:
        return Parsed([_docx(data)], paged=False)
    text = _utf8(data)
    if mime_type == HTML:
        text = _html(text)
    return Parsed([text], paged=False)


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError("invalid_file", "The file is not valid UTF-8 text.") from exc


def _pdf(path: Path, max_pages: int) -> list[str]:
    import pypdfium2 as pdfium  # imported in the child process only

    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise ParseError("invalid_file", f"The PDF cannot be read ({exc}).") from exc
    try:
        if len(document) > max_pages:
            raise ParseError(
                "too_many_pages", f"The PDF has {len(document)} pages; at most {max_pages}."
            )
        pages = []
        for index in range(len(document)):
            page = document[index]
            textpage = page.get_textpage()
            pages.append(textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n"))
            textpage.close()
            page.close()
        return pages
    finally:
        document.close()


def _html(text: str) -> str:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(text)
    for node in tree.css("script, style, noscript, template, head"):
        node.decompose()
    root = tree.body or tree.root
    if root is None:
        return ""
    lines: list[str] = []
    for node in root.css("h1, h2, h3, h4, h5, h6, p, li, pre, td, th, dt, dd, blockquote"):
        if node.parent is not None and node.parent.tag in ("li", "td", "th", "blockquote"):
            continue  # its text is in its container's
        content = " ".join((node.text(separator=" ") or "").split())
        if not content:
            continue
        if node.tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            lines.append("#" * int(node.tag[1]) + " " + content)
        elif node.tag == "li":
            lines.append("- " + content)
        else:
            lines.append(content)
    if not lines:  # no block elements: the text as it is
        lines = [" ".join((root.text(separator=" ") or "").split())]
    return "\n\n".join(lines)


def _docx(data: bytes) -> str:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ParseError("invalid_file", "The DOCX file cannot be read.") from exc
    lines = []
    for paragraph in document.paragraphs:
        content = paragraph.text.strip()
        if not content:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if style.startswith("Heading ") and style[8:].isdigit():
            lines.append("#" * min(int(style[8:]), 6) + " " + content)
        elif style == "Title":
            lines.append("# " + content)
        else:
            lines.append(content)
    return "\n\n".join(lines)
