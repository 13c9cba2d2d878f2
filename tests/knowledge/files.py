"""Real files for the knowledge tests, written by the tests themselves: PDF (fpdf2), DOCX
(python-docx), HTML and Markdown. No binary fixture is checked in."""

from __future__ import annotations

import io

import docx
from fpdf import FPDF


def pdf(pages: list[str]) -> bytes:
    """A PDF with one page per text, each with a real text layer."""
    document = FPDF()
    document.set_font("helvetica", size=12)
    for text in pages:
        document.add_page()
        document.multi_cell(0, 8, text)
    return bytes(document.output())


def scanned_pdf(pages: int = 2) -> bytes:
    """Pages with drawings only: no text layer (what a scan without OCR looks like)."""
    document = FPDF()
    for _ in range(pages):
        document.add_page()
        document.rect(20, 20, 100, 60, style="F")
    return bytes(document.output())


def docx_file(sections: list[tuple[str, str]]) -> bytes:
    """A DOCX with a heading and a paragraph per section."""
    document = docx.Document()
    for heading, text in sections:
        document.add_heading(heading, level=1)
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def html(sections: list[tuple[str, str]]) -> bytes:
    body = "".join(f"<h2>{heading}</h2><p>{text}</p>" for heading, text in sections)
    return (
        "<!DOCTYPE html><html><head><title>Guide</title><style>p{}</style>"
        f"<script>var hidden = 'never indexed';</script></head><body><h1>Guide</h1>{body}"
        "</body></html>"
    ).encode()
